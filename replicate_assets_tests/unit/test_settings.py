"""Settings: every bad value names its variable and the fix; the defaults are the README's."""

import pytest

from replicate_assets.settings import Settings, SettingsError


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("PRODUCT_IMAGES_START_DATE", "15/01/2025", "use YYYY-MM-DD"),
        ("REPLICATE_BASE_URL", "api.replicate.com", "not an http(s) URL"),
        ("DATABASE_URL", "shop.db", "not a SQLAlchemy URL"),
        ("DATABASE_URL", "oracle://scott:tiger@db/shop", "is not supported"),
        ("REPLICATE_BASE_URL", "http://localhost:eighty/v1", "port that is not a number"),
        ("IMAGE_BASE_URL", "ftp://files.example/storage", "not an http(s) URL"),
        ("PRODUCT_IMAGES_START_DATE", "2999-01-01", "is in the future"),
        ("SHOP_IMAGE_PATH_COLUMN", "path; drop table x", "not a column name"),
        ("REPLICATE_CHUNK_SIZE", "0", "is out of range: use a whole number from 1 to 10000 (default 50)"),
        ("REPLICATE_CHUNK_SIZE", "abc", "must be a positive whole number from 1 to 10000"),
        ("REPLICATE_CHUNK_SIZE", "99999999999999999999999", "is out of range"),
        ("REPLICATE_MAX_IN_FLIGHT", "-3", "must be a positive whole number"),
        ("SIMILAR_PRODUCTS_K", "١٢", "must be a positive whole number"),  # Arabic-Indic digits
        ("DATABASE_URL", "mysql+pymysql://shop@db:abc/shop", "a port that is not a number"),
        ("DATABASE_URL", "mysql+pymysql://shop@db/shop?charset=bogus", "charset='bogus', which MySQL does not know"),
    ],
)
def test_wrong_settings_name_the_variable(name, value, message):
    with pytest.raises(SettingsError, match=name) as raised:
        Settings.from_env({name: value})
    assert message in str(raised.value)


def test_default_settings():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///data/shop.db"
    assert settings.replicate_base_url == "https://api.replicate.com/v1"
    assert settings.replicate_model == "openai/clip" and settings.chunk_size == 50
    assert (settings.max_attempts, settings.retry_delay_seconds, settings.max_predictions_per_minute) == (3, 60, 600)


def test_resources_share_the_settings_bounds_and_defaults():
    """A run config is held to the same rules as the environment: a zero or an absurd number stops the run."""
    import pydantic

    from replicate_assets.defs.resources import EmbeddingPolicy, ReplicateResource, SimilarityOptions
    from replicate_assets.settings import NUMBERS

    policy, similarity, replicate = EmbeddingPolicy(), SimilarityOptions(), ReplicateResource()
    assert (policy.chunk_size, policy.max_attempts) == (NUMBERS["chunk_size"].default, 3)
    assert similarity.k == Settings.from_env({}).similar_products_k == 20
    assert replicate.max_in_flight == Settings.from_env({}).max_in_flight
    for make, field in (
        (EmbeddingPolicy, "chunk_size"),
        (EmbeddingPolicy, "max_attempts"),
        (SimilarityOptions, "k"),
        (ReplicateResource, "max_in_flight"),
        (ReplicateResource, "batch_size"),
    ):
        with pytest.raises(pydantic.ValidationError, match=field):
            make(**{field: 0})
    with pytest.raises(pydantic.ValidationError, match="chunk_size"):
        EmbeddingPolicy(chunk_size=10**20)
