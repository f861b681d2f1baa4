"""The pipeline's own logic, free of Dagster: what each image needs, and one step's embedding bookkeeping.

- `classify`: the decision for one image (to embed, up to date, unusable, given up);
- `embedding_run`: claims, resume, reuse, chunked writes and progress of one `clip_embeddings` step;
- `processes`: which process holds a claim or a pool slot, and whether it is alive;
- `progress_file`: the plain log in the Laravel version's format.
"""
