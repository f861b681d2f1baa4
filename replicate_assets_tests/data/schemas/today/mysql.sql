CREATE TABLE `products` (
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `name` varchar(255) NOT NULL,
  `created_at` datetime DEFAULT NULL,
  `updated_at` datetime DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `product_images` (
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `product_id` bigint(20) unsigned NOT NULL,
  `path` varchar(2048) DEFAULT NULL,
  `created_at` datetime DEFAULT NULL,
  `updated_at` datetime DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `product_id` (`product_id`),
  CONSTRAINT `product_images_ibfk_1` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `clip_embedding_outcomes` (
  `product_image_id` bigint(20) unsigned NOT NULL,
  `model` varchar(191) NOT NULL,
  `product_id` bigint(20) unsigned NOT NULL,
  `image_url` text DEFAULT NULL,
  `url_hash` varchar(64) DEFAULT NULL,
  `image_updated_at` datetime(6) DEFAULT NULL,
  `status` varchar(16) NOT NULL,
  `dimensions` int(11) DEFAULT NULL,
  `error` text DEFAULT NULL,
  `attempts` int(11) NOT NULL,
  `max_attempts` int(11) DEFAULT NULL,
  `predict_time` float DEFAULT NULL,
  `prediction_id` varchar(64) DEFAULT NULL,
  `created_at` datetime(6) NOT NULL,
  `updated_at` datetime(6) NOT NULL,
  `claimed_by` varchar(64) DEFAULT NULL,
  `claim_process` varchar(255) DEFAULT NULL,
  `claim_expires_at` datetime(6) DEFAULT NULL,
  `sent_at` datetime(6) DEFAULT NULL,
  `embedding` longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL CHECK (json_valid(`embedding`)),
  PRIMARY KEY (`product_image_id`,`model`),
  KEY `ix_clip_embedding_outcomes_claimed_by` (`claimed_by`),
  KEY `ix_clip_embedding_outcomes_model_status` (`model`,`status`,`product_image_id`),
  KEY `ix_clip_embedding_outcomes_model_url` (`model`,`url_hash`),
  CONSTRAINT `clip_embedding_outcomes_ibfk_1` FOREIGN KEY (`product_image_id`) REFERENCES `product_images` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `product_embeddings` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `product_id` bigint(20) unsigned NOT NULL,
  `product_image_id` bigint(20) unsigned NOT NULL,
  `model` varchar(191) NOT NULL,
  `dimensions` int(11) NOT NULL,
  `image_url` text DEFAULT NULL,
  `created_at` datetime DEFAULT NULL,
  `updated_at` datetime DEFAULT NULL,
  `embedding` longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL CHECK (json_valid(`embedding`)),
  PRIMARY KEY (`id`),
  UNIQUE KEY `product_image_id` (`product_image_id`),
  KEY `ix_product_embeddings_product_id` (`product_id`),
  CONSTRAINT `product_embeddings_ibfk_1` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`) ON DELETE CASCADE,
  CONSTRAINT `product_embeddings_ibfk_2` FOREIGN KEY (`product_image_id`) REFERENCES `product_images` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `clip_image_vectors` (
  `product_image_id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `product_id` bigint(20) unsigned NOT NULL,
  `model` varchar(191) NOT NULL,
  `image_url` text DEFAULT NULL,
  `url_hash` varchar(64) DEFAULT NULL,
  `digest` varchar(40) NOT NULL,
  `published_at` datetime DEFAULT NULL,
  `updated_at` datetime(6) NOT NULL,
  `listed_at` datetime(6) DEFAULT NULL,
  `removed` tinyint(1) NOT NULL,
  `vector` blob NOT NULL,
  PRIMARY KEY (`product_image_id`),
  KEY `ix_clip_image_vectors_product_id` (`product_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `product_similarities` (
  `product_id` bigint(20) unsigned NOT NULL,
  `rank` int(11) NOT NULL,
  `similar_product_id` bigint(20) unsigned NOT NULL,
  `score` float NOT NULL,
  `model` varchar(191) NOT NULL,
  `computed_at` datetime(6) NOT NULL,
  PRIMARY KEY (`product_id`,`rank`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `product_duplicates` (
  `product_id` bigint(20) unsigned NOT NULL,
  `duplicate_product_id` bigint(20) unsigned NOT NULL,
  `reason` varchar(32) NOT NULL,
  `model` varchar(191) NOT NULL,
  `computed_at` datetime(6) NOT NULL,
  PRIMARY KEY (`product_id`,`duplicate_product_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `search_query_embeddings` (
  `model` varchar(191) NOT NULL,
  `kind` varchar(8) NOT NULL,
  `query_hash` varchar(64) NOT NULL,
  `shown` text NOT NULL,
  `hits` int(11) NOT NULL,
  `created_at` datetime(6) NOT NULL,
  `vector` blob NOT NULL,
  PRIMARY KEY (`model`,`kind`,`query_hash`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
