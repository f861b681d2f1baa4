CREATE TABLE public.clip_embedding_outcomes (
    product_image_id bigint NOT NULL,
    model character varying(191) NOT NULL,
    product_id bigint NOT NULL,
    image_url text,
    url_hash character varying(64),
    image_updated_at timestamp without time zone,
    status character varying(16) NOT NULL,
    dimensions integer,
    error text,
    attempts integer NOT NULL,
    max_attempts integer,
    predict_time double precision,
    prediction_id character varying(64),
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone NOT NULL,
    claimed_by character varying(64),
    claim_process character varying(255),
    claim_expires_at timestamp without time zone,
    sent_at timestamp without time zone,
    embedding json
);

CREATE TABLE public.clip_image_vectors (
    product_image_id bigint NOT NULL,
    product_id bigint NOT NULL,
    model character varying(191) NOT NULL,
    image_url text,
    url_hash character varying(64),
    digest character varying(40) NOT NULL,
    published_at timestamp without time zone,
    updated_at timestamp without time zone NOT NULL,
    listed_at timestamp without time zone,
    removed boolean NOT NULL,
    vector bytea NOT NULL
);

CREATE SEQUENCE public.clip_image_vectors_product_image_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.clip_image_vectors_product_image_id_seq OWNED BY public.clip_image_vectors.product_image_id;

CREATE TABLE public.product_duplicates (
    product_id bigint NOT NULL,
    duplicate_product_id bigint NOT NULL,
    reason character varying(32) NOT NULL,
    model character varying(191) NOT NULL,
    computed_at timestamp without time zone NOT NULL
);

CREATE TABLE public.product_embeddings (
    id bigint NOT NULL,
    product_id bigint NOT NULL,
    product_image_id bigint NOT NULL,
    model character varying(191) NOT NULL,
    dimensions integer NOT NULL,
    image_url text,
    created_at timestamp without time zone,
    updated_at timestamp without time zone,
    embedding json NOT NULL
);

CREATE SEQUENCE public.product_embeddings_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.product_embeddings_id_seq OWNED BY public.product_embeddings.id;

CREATE TABLE public.product_images (
    id bigint NOT NULL,
    product_id bigint NOT NULL,
    path character varying(2048),
    created_at timestamp without time zone,
    updated_at timestamp without time zone
);

CREATE SEQUENCE public.product_images_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.product_images_id_seq OWNED BY public.product_images.id;

CREATE TABLE public.product_similarities (
    product_id bigint NOT NULL,
    rank integer NOT NULL,
    similar_product_id bigint NOT NULL,
    score double precision NOT NULL,
    model character varying(191) NOT NULL,
    computed_at timestamp without time zone NOT NULL
);

CREATE TABLE public.products (
    id bigint NOT NULL,
    name character varying(255) NOT NULL,
    created_at timestamp without time zone,
    updated_at timestamp without time zone
);

CREATE SEQUENCE public.products_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.products_id_seq OWNED BY public.products.id;

CREATE TABLE public.search_query_embeddings (
    model character varying(191) NOT NULL,
    kind character varying(8) NOT NULL,
    query_hash character varying(64) NOT NULL,
    shown text NOT NULL,
    hits integer NOT NULL,
    created_at timestamp without time zone NOT NULL,
    vector bytea NOT NULL
);

ALTER TABLE ONLY public.clip_image_vectors ALTER COLUMN product_image_id SET DEFAULT nextval('public.clip_image_vectors_product_image_id_seq'::regclass);

ALTER TABLE ONLY public.product_embeddings ALTER COLUMN id SET DEFAULT nextval('public.product_embeddings_id_seq'::regclass);

ALTER TABLE ONLY public.product_images ALTER COLUMN id SET DEFAULT nextval('public.product_images_id_seq'::regclass);

ALTER TABLE ONLY public.products ALTER COLUMN id SET DEFAULT nextval('public.products_id_seq'::regclass);

ALTER TABLE ONLY public.clip_embedding_outcomes
    ADD CONSTRAINT clip_embedding_outcomes_pkey PRIMARY KEY (product_image_id, model);

ALTER TABLE ONLY public.clip_image_vectors
    ADD CONSTRAINT clip_image_vectors_pkey PRIMARY KEY (product_image_id);

ALTER TABLE ONLY public.product_duplicates
    ADD CONSTRAINT product_duplicates_pkey PRIMARY KEY (product_id, duplicate_product_id);

ALTER TABLE ONLY public.product_embeddings
    ADD CONSTRAINT product_embeddings_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.product_embeddings
    ADD CONSTRAINT product_embeddings_product_image_id_key UNIQUE (product_image_id);

ALTER TABLE ONLY public.product_images
    ADD CONSTRAINT product_images_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.product_similarities
    ADD CONSTRAINT product_similarities_pkey PRIMARY KEY (product_id, rank);

ALTER TABLE ONLY public.products
    ADD CONSTRAINT products_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.search_query_embeddings
    ADD CONSTRAINT search_query_embeddings_pkey PRIMARY KEY (model, kind, query_hash);

CREATE INDEX ix_clip_embedding_outcomes_claimed_by ON public.clip_embedding_outcomes USING btree (claimed_by);

CREATE INDEX ix_clip_embedding_outcomes_model_status ON public.clip_embedding_outcomes USING btree (model, status, product_image_id);

CREATE INDEX ix_clip_embedding_outcomes_model_url ON public.clip_embedding_outcomes USING btree (model, url_hash);

CREATE INDEX ix_clip_image_vectors_product_id ON public.clip_image_vectors USING btree (product_id);

CREATE INDEX ix_product_embeddings_product_id ON public.product_embeddings USING btree (product_id);

ALTER TABLE ONLY public.clip_embedding_outcomes
    ADD CONSTRAINT clip_embedding_outcomes_product_image_id_fkey FOREIGN KEY (product_image_id) REFERENCES public.product_images(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.product_embeddings
    ADD CONSTRAINT product_embeddings_product_id_fkey FOREIGN KEY (product_id) REFERENCES public.products(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.product_embeddings
    ADD CONSTRAINT product_embeddings_product_image_id_fkey FOREIGN KEY (product_image_id) REFERENCES public.product_images(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.product_images
    ADD CONSTRAINT product_images_product_id_fkey FOREIGN KEY (product_id) REFERENCES public.products(id) ON DELETE CASCADE;
