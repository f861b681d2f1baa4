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
        ("REPLICATE_CHUNK_SIZE", "0", "must be a positive whole number"),
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
