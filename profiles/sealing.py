"""Domain: phone numbers sealed for storage at the county, and keyed references to them.

A call record keeps the caller's number and a callback request keeps the number to call
back, but neither may sit in a database in clear. ``seal`` encrypts such a number with
the profile store's active AES-256-GCM key into text of the form
``sealed:v1:<key id>:<base64 of nonce + ciphertext + tag>``. The associated data binds it
to one call and one purpose, so a sealed number copied to another call fails to open.

``number_ref`` is the HMAC of the canonical number under the lookup key: it matches the
same caller across calls without revealing the number, and it may travel upward.
"""

from __future__ import annotations

import base64
import binascii

from profiles.keys import DecryptionFailed, ProfileKeys
from profiles.phone import PhoneNumberError, normalise_phone

SEALED_PREFIX = "sealed:v1:"


class SealedValueError(ValueError):
    """Text that is not a sealed value in the ``sealed:v1:`` form."""


def is_sealed(text: str) -> bool:
    return text.startswith(SEALED_PREFIX)


def seal(keys: ProfileKeys, number: str, *, call_id: str, purpose: str) -> str:
    """Encrypt ``number`` for one call and purpose (such as ``caller`` or ``callback``) under the active key."""
    key_id = keys.active_key_id
    # ProfileKeys binds a ciphertext to "<uid>|<column>|<key id>". The call id takes the
    # uid's place behind a "call|" marker, so a profile field never opens as call data.
    blob = keys.encrypt(number.encode(), profile_uid=f"call|{call_id}", column=purpose, key_id=key_id)
    return f"{SEALED_PREFIX}{key_id}:{base64.b64encode(blob).decode()}"


def unseal(keys: ProfileKeys, sealed: str, *, call_id: str, purpose: str) -> str:
    """Decrypt a sealed number; raise SealedValueError for malformed text, DecryptionFailed for a wrong key or call."""
    if not is_sealed(sealed):
        raise SealedValueError("value does not start with sealed:v1:")
    key_id, _, encoded = sealed.removeprefix(SEALED_PREFIX).partition(":")
    if not key_id or not encoded:
        raise SealedValueError("sealed value lacks its key id or its ciphertext")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise SealedValueError("sealed value is not valid Base64") from None
    try:
        return keys.decrypt(blob, profile_uid=f"call|{call_id}", column=purpose, key_id=key_id).decode()
    except UnicodeDecodeError:
        raise DecryptionFailed("sealed value does not decode as text") from None


def number_ref(keys: ProfileKeys, number: str, *, key_id: str | None = None) -> str:
    """Return the keyed hash of a phone number in hex: of its E.164 form when it parses, else of the digits."""
    try:
        canonical = normalise_phone(number).e164
    except PhoneNumberError:
        canonical = number
    return keys.lookup_hash(canonical, key_id=key_id).hex()
