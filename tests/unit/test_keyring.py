"""OFFBOARD_ENCRYPTION_KEYS: the first key seals, every key opens, keys rotate, nothing leaks."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from connector.errors import SettingsInvalid
from connector.keyring import Keyring, SecretUnreadable, parse_keys
from connector.settings import load_settings, secret_variables

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"


def key() -> str:
    return Fernet.generate_key().decode()


def test_a_sealed_token_opens_again_and_never_shows_the_token():
    keyring = Keyring(key())
    sealed = keyring.encrypt(TOKEN)
    assert TOKEN not in sealed
    assert keyring.decrypt(sealed) == TOKEN
    assert keyring.encrypt(TOKEN) != sealed  # a fresh IV each time: equal tokens do not look equal


def test_the_first_key_seals_and_every_key_opens():
    old, new = key(), key()
    sealed_with_old = Keyring(old).encrypt(TOKEN)
    both = Keyring(f"{new}, {old}")
    assert both.decrypt(sealed_with_old) == TOKEN
    sealed_with_new = both.encrypt(TOKEN)
    assert Keyring(new).decrypt(sealed_with_new) == TOKEN
    with pytest.raises(SecretUnreadable):
        Keyring(old).decrypt(sealed_with_new)


def test_rotating_seals_with_the_first_key_so_the_old_one_can_go():
    old, new = key(), key()
    sealed = Keyring(old).encrypt(TOKEN)
    rotated = Keyring([new, old]).rotate(sealed)
    assert Keyring(new).decrypt(rotated) == TOKEN
    with pytest.raises(SecretUnreadable):
        Keyring(old).decrypt(rotated)


def test_a_token_no_key_opens_is_refused_without_showing_it():
    sealed = Keyring(key()).encrypt(TOKEN)
    with pytest.raises(SecretUnreadable) as refused:
        Keyring(key()).decrypt(sealed, what="the access token of hubspot account 42")
    message = str(refused.value)
    assert "the access token of hubspot account 42" in message
    assert "OFFBOARD_ENCRYPTION_KEYS" in message
    assert sealed not in message and TOKEN not in message
    with pytest.raises(SecretUnreadable):
        Keyring(key()).decrypt("not a fernet token at all")
    with pytest.raises(SecretUnreadable):
        Keyring(key()).rotate(sealed)


def test_a_bad_key_is_named_by_its_place_never_shown():
    bad = "this-is-a-private-value-not-a-key"
    with pytest.raises(ValueError) as refused:
        parse_keys(f"{key()},{bad}")
    assert "key 2 of 2" in str(refused.value)
    assert bad not in str(refused.value)
    with pytest.raises(ValueError, match="no key given"):
        parse_keys(" , ")
    assert len(parse_keys(f" {key()} ,, {key()} ")) == 2


def test_the_keyring_prints_no_key():
    secret = key()
    keyring = Keyring(secret)
    assert secret not in repr(keyring) and repr(keyring) == "Keyring(1 key)"


def test_the_setting_is_a_secret_and_unset_means_installs_are_off():
    assert "OFFBOARD_ENCRYPTION_KEYS" in secret_variables()
    settings = load_settings(OFFBOARD_ENV="test", OFFBOARD_ENCRYPTION_KEYS="  ")
    assert settings.encryption_keys is None
    assert Keyring.from_settings(settings) is None


def test_the_setting_builds_the_keyring_and_stays_out_of_print():
    first, second = key(), key()
    settings = load_settings(OFFBOARD_ENV="test", OFFBOARD_ENCRYPTION_KEYS=f"{first},{second}")
    assert first not in repr(settings) and first not in str(settings)
    assert f"{first},{second}" in settings.secret_values()
    keyring = Keyring.from_settings(settings)
    assert keyring is not None
    assert Keyring(first).decrypt(keyring.encrypt(TOKEN)) == TOKEN


@pytest.mark.parametrize("value", ["short", "x" * 44, "a,b"])
def test_a_malformed_setting_names_the_variable_and_not_the_value(value: str):
    with pytest.raises(SettingsInvalid) as refused:
        load_settings(OFFBOARD_ENV="test", OFFBOARD_ENCRYPTION_KEYS=value)
    message = str(refused.value)
    assert "OFFBOARD_ENCRYPTION_KEYS:" in message and "not a Fernet key" in message
    assert value not in message.replace("OFFBOARD_ENCRYPTION_KEYS", "")
