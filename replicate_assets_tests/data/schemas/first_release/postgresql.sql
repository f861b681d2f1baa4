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
    predict_time double precision,
    prediction_id character varying(64),
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone NOT NULL,
    embedding json
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

ALTER TABLE ONLY public.product_embeddings ALTER COLUMN id SET DEFAULT nextval('public.product_embeddings_id_seq'::regclass);

ALTER TABLE ONLY public.product_images ALTER COLUMN id SET DEFAULT nextval('public.product_images_id_seq'::regclass);

ALTER TABLE ONLY public.products ALTER COLUMN id SET DEFAULT nextval('public.products_id_seq'::regclass);

ALTER TABLE ONLY public.clip_embedding_outcomes
    ADD CONSTRAINT clip_embedding_outcomes_pkey PRIMARY KEY (product_image_id, model);

ALTER TABLE ONLY public.product_embeddings
    ADD CONSTRAINT product_embeddings_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.product_embeddings
    ADD CONSTRAINT product_embeddings_product_image_id_key UNIQUE (product_image_id);

ALTER TABLE ONLY public.product_images
    ADD CONSTRAINT product_images_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.products
    ADD CONSTRAINT products_pkey PRIMARY KEY (id);

CREATE INDEX ix_clip_embedding_outcomes_model_status ON public.clip_embedding_outcomes USING btree (model, status, product_image_id);

CREATE INDEX ix_clip_embedding_outcomes_model_url ON public.clip_embedding_outcomes USING btree (model, url_hash);

CREATE INDEX ix_product_embeddings_product_id ON public.product_embeddings USING btree (product_id);

ALTER TABLE ONLY public.clip_embedding_outcomes
    ADD CONSTRAINT clip_embedding_outcomes_product_image_id_fkey FOREIGN KEY (product_image_id) REFERENCES public.product_images(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.product_embeddings
    ADD CONSTRAINT product_embeddings_product_id_fkey FOREIGN KEY (product_id) REFERENCES public.products(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.product_embeddings
    ADD CONSTRAINT product_embeddings_product_image_id_fkey FOREIGN KEY (product_image_id) REFERENCES public.product_images(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.product_images
    ADD CONSTRAINT product_images_product_id_fkey FOREIGN KEY (product_id) REFERENCES public.products(id) ON DELETE CASCADE;
