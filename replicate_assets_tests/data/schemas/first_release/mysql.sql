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
  `predict_time` double DEFAULT NULL,
  `prediction_id` varchar(64) DEFAULT NULL,
  `created_at` datetime(6) NOT NULL,
  `updated_at` datetime(6) NOT NULL,
  `embedding` longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL CHECK (json_valid(`embedding`)),
  PRIMARY KEY (`product_image_id`,`model`),
  KEY `ix_clip_embedding_outcomes_model_url` (`model`,`url_hash`),
  KEY `ix_clip_embedding_outcomes_model_status` (`model`,`status`,`product_image_id`),
  CONSTRAINT `clip_embedding_outcomes_ibfk_1` FOREIGN KEY (`product_image_id`) REFERENCES `product_images` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `product_embeddings` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `product_id` bigint(20) unsigned NOT NULL,
  `product_image_id` bigint(20) unsigned NOT NULL,
  `model` varchar(191) NOT NULL,
  `dimensions` int(11) NOT NULL,
  `image_url` text DEFAULT NULL,
  `created_at` datetime(6) DEFAULT NULL,
  `updated_at` datetime(6) DEFAULT NULL,
  `embedding` longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL CHECK (json_valid(`embedding`)),
  PRIMARY KEY (`id`),
  UNIQUE KEY `product_image_id` (`product_image_id`),
  KEY `ix_product_embeddings_product_id` (`product_id`),
  CONSTRAINT `product_embeddings_ibfk_1` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`) ON DELETE CASCADE,
  CONSTRAINT `product_embeddings_ibfk_2` FOREIGN KEY (`product_image_id`) REFERENCES `product_images` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
