CREATE TABLE products (
	id INTEGER NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	created_at DATETIME, 
	updated_at DATETIME, 
	PRIMARY KEY (id)
);

CREATE TABLE product_images (
	id INTEGER NOT NULL, 
	product_id INTEGER NOT NULL, 
	path VARCHAR(2048), 
	created_at DATETIME, 
	updated_at DATETIME, 
	PRIMARY KEY (id), 
	FOREIGN KEY(product_id) REFERENCES products (id) ON DELETE CASCADE
);

CREATE TABLE clip_embedding_outcomes (
	product_image_id INTEGER NOT NULL, 
	model VARCHAR(191) NOT NULL, 
	product_id INTEGER NOT NULL, 
	image_url TEXT, 
	url_hash VARCHAR(64), 
	image_updated_at DATETIME, 
	status VARCHAR(16) NOT NULL, 
	dimensions INTEGER, 
	error TEXT, 
	attempts INTEGER NOT NULL, 
	predict_time FLOAT, 
	prediction_id VARCHAR(64), 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	embedding JSON, 
	PRIMARY KEY (product_image_id, model), 
	FOREIGN KEY(product_image_id) REFERENCES product_images (id) ON DELETE CASCADE
);

CREATE TABLE product_embeddings (
	id INTEGER NOT NULL, 
	product_id INTEGER NOT NULL, 
	product_image_id INTEGER NOT NULL, 
	model VARCHAR(191) NOT NULL, 
	dimensions INTEGER NOT NULL, 
	image_url TEXT, 
	created_at DATETIME, 
	updated_at DATETIME, 
	embedding JSON NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(product_id) REFERENCES products (id) ON DELETE CASCADE, 
	UNIQUE (product_image_id), 
	FOREIGN KEY(product_image_id) REFERENCES product_images (id) ON DELETE CASCADE
);

CREATE INDEX ix_clip_embedding_outcomes_model_url ON clip_embedding_outcomes (model, url_hash);

CREATE INDEX ix_clip_embedding_outcomes_model_status ON clip_embedding_outcomes (model, status, product_image_id);

CREATE INDEX ix_product_embeddings_product_id ON product_embeddings (product_id);
