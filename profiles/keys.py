"""Encryption and lookup keys for profiles: AES-256-GCM for fields at rest, HMAC-SHA256 for lookup.

Two files, both outside the database and readable by the owner only (mode 0600):

- the encryption key file contains every AES-256 key still in use, by id, and names the
  active one, so rows encrypted under an older key stay readable while a rotation runs;
- the lookup key file contains the HMAC keys used to hash ID numbers and canonical phone
  numbers for lookup and deduplication, by id, and names the active one. It is a separate
  file so that the hashes cannot be recomputed from the encryption keys alone. The profile
  database records which lookup key its hashes are under, and a rotation re-hashes every
  row in one transaction before the old key may be removed.

Each field is encrypted with a fresh 96-bit random nonce. The associated data binds the
ciphertext to its profile, its column and its key id, so a ciphertext copied into
another row or column fails to decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENCRYPTION_FORMAT = "hotline-profile-encryption-keys/1"
LOOKUP_FORMAT = "hotline-profile-lookup-key/1"
# Id of the single key in a lookup key file written before lookup keys had ids.
FIRST_LOOKUP_KEY_ID = "l0"
NONCE_BYTES = 12


class KeyFileError(Exception):
    """A key file that is missing, malformed or readable by others; the message is Chinese."""


class DecryptionFailed(Exception):
    """A ciphertext that does not match its key, profile or column."""


def _check_mode(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"密钥文件 {path} 的权限为 {stat.S_IMODE(mode):o}，其他用户可读；请执行 chmod 600 {path}")


def _write_private(path: Path, document: dict[str, object], *, replace: bool) -> None:
    """Write a key file with mode 0600; a replacement goes through a temporary file and a rename."""
    data = (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode()
    target = path.with_name(path.name + ".tmp") if replace else path
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if replace:
        os.replace(target, path)


def _read_json(path: Path, expected_format: str) -> dict[str, object]:
    try:
        _check_mode(path)
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyFileError(f"找不到密钥文件 {path}；请先执行 hotline profiles keygen --config 配置文件") from None
    except (OSError, json.JSONDecodeError) as error:
        raise KeyFileError(f"无法读取密钥文件 {path}：{error}") from None
    if not isinstance(document, dict) or document.get("format") != expected_format:
        raise KeyFileError(f"密钥文件 {path} 的格式不是 {expected_format}，请检查是否选错了文件")
    return document


def _keys_field(document: dict[str, object], path: Path) -> dict[str, str]:
    keys = document.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise KeyFileError(f"密钥文件 {path} 中没有任何密钥")
    return {str(key_id): str(text) for key_id, text in keys.items()}


def _decode_key(text: object, path: Path) -> bytes:
    try:
        key = base64.b64decode(str(text), validate=True)
    except ValueError:
        raise KeyFileError(f"密钥文件 {path} 中的密钥不是有效的 Base64") from None
    if len(key) != 32:
        raise KeyFileError(f"密钥文件 {path} 中的密钥长度为 {len(key)} 字节，应为 32 字节")
    return key


def new_key_id(now: datetime, prefix: str = "k") -> str:
    return prefix + now.astimezone(UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(2)


@dataclass(frozen=True)
class ProfileKeys:
    """The AES keys by id and the id new writes use; the HMAC lookup keys by id and the active one's id.

    With a single lookup key, ``lookup_keys`` may be left empty and ``lookup_key`` is stored
    under ``FIRST_LOOKUP_KEY_ID``.
    """

    encryption_keys: dict[str, bytes] = field(repr=False)
    active_key_id: str
    lookup_key: bytes = field(repr=False)
    lookup_keys: dict[str, bytes] = field(default_factory=dict, repr=False)
    active_lookup_key_id: str = FIRST_LOOKUP_KEY_ID

    def __post_init__(self) -> None:
        if not self.lookup_keys:
            object.__setattr__(self, "lookup_keys", {self.active_lookup_key_id: self.lookup_key})

    def encrypt(self, plaintext: bytes, *, profile_uid: str, column: str, key_id: str | None = None) -> bytes:
        """Encrypt one field; the result is nonce + ciphertext + tag."""
        key_id = key_id or self.active_key_id
        nonce = os.urandom(NONCE_BYTES)
        aad = f"{profile_uid}|{column}|{key_id}".encode()
        return nonce + AESGCM(self.encryption_keys[key_id]).encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, *, profile_uid: str, column: str, key_id: str) -> bytes:
        key = self.encryption_keys.get(key_id)
        if key is None:
            raise DecryptionFailed(f"key id {key_id} is not in the encryption key file")
        aad = f"{profile_uid}|{column}|{key_id}".encode()
        try:
            return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise DecryptionFailed(f"column {column} does not decrypt under key {key_id}") from None

    def lookup_hash(self, canonical: str, *, key_id: str | None = None) -> bytes:
        """HMAC-SHA256 of a canonical value (an 18-character ID number or an E.164 phone number).

        ``key_id`` picks a lookup key other than the active one; raises KeyError for an unknown id.
        """
        key = self.lookup_keys[key_id] if key_id is not None else self.lookup_key
        return hmac.new(key, canonical.encode(), hashlib.sha256).digest()


def _lookup_keys(document: dict[str, object], path: Path) -> tuple[dict[str, bytes], str]:
    """Return the lookup keys by id and the active id; a file with one bare ``key`` has the id ``l0``."""
    if "keys" not in document:
        return {FIRST_LOOKUP_KEY_ID: _decode_key(document.get("key"), path)}, FIRST_LOOKUP_KEY_ID
    keys = {key_id: _decode_key(text, path) for key_id, text in _keys_field(document, path).items()}
    active = str(document.get("active"))
    if active not in keys:
        raise KeyFileError(f"查询密钥文件 {path} 的当前密钥 {active} 不在密钥列表中")
    return keys, active


def load_keys(encryption_key_file: Path, lookup_key_file: Path) -> ProfileKeys:
    """Read both key files; raise KeyFileError with a Chinese message when one cannot be used."""
    encryption = _read_json(encryption_key_file, ENCRYPTION_FORMAT)
    keys = {key_id: _decode_key(text, encryption_key_file)
            for key_id, text in _keys_field(encryption, encryption_key_file).items()}
    active = str(encryption.get("active"))
    if active not in keys:
        raise KeyFileError(f"密钥文件 {encryption_key_file} 的当前密钥 {active} 不在密钥列表中")

    lookup_keys, lookup_active = _lookup_keys(_read_json(lookup_key_file, LOOKUP_FORMAT), lookup_key_file)
    return ProfileKeys(keys, active, lookup_keys[lookup_active], lookup_keys, lookup_active)


def add_lookup_key(lookup_key_file: Path, *, now: datetime) -> str:
    """Add a fresh HMAC key to the lookup key file and make it active; the old ones stay. Returns its id.

    The profile database keeps using the key its hashes are under until a rotation
    re-hashes every row (``ProfileStore.rekey_lookup``).
    """
    document = _read_json(lookup_key_file, LOOKUP_FORMAT)
    keys, _ = _lookup_keys(document, lookup_key_file)
    key_id = new_key_id(now, prefix="l")
    texts = {old_id: base64.b64encode(key).decode() for old_id, key in keys.items()}
    texts[key_id] = base64.b64encode(secrets.token_bytes(32)).decode()
    _write_private(lookup_key_file, {"format": LOOKUP_FORMAT, "active": key_id, "keys": texts}, replace=True)
    return key_id


def retire_lookup_keys(lookup_key_file: Path, key_ids: set[str]) -> None:
    """Remove lookup keys that the database no longer uses; the active key is never removed."""
    document = _read_json(lookup_key_file, LOOKUP_FORMAT)
    keys, active = _lookup_keys(document, lookup_key_file)
    if active in key_ids:
        raise KeyFileError("不能删除当前查询密钥")
    texts = {key_id: base64.b64encode(key).decode() for key_id, key in keys.items() if key_id not in key_ids}
    _write_private(lookup_key_file, {"format": LOOKUP_FORMAT, "active": active, "keys": texts}, replace=True)


def generate_key_files(encryption_key_file: Path, lookup_key_file: Path, *, now: datetime) -> str:
    """Create both key files with fresh random keys; never overwrites. Returns the new key id."""
    for path in (encryption_key_file, lookup_key_file):
        if path.exists():
            raise KeyFileError(f"密钥文件 {path} 已存在，不会覆盖；更换加密密钥请用 hotline profiles rotate-key")
    key_id = new_key_id(now)
    _write_private(encryption_key_file, {
        "format": ENCRYPTION_FORMAT,
        "active": key_id,
        "keys": {key_id: base64.b64encode(AESGCM.generate_key(256)).decode()},
    }, replace=False)
    _write_private(lookup_key_file, {
        "format": LOOKUP_FORMAT,
        "key": base64.b64encode(secrets.token_bytes(32)).decode(),
    }, replace=False)
    return key_id


def add_active_key(encryption_key_file: Path, *, now: datetime) -> str:
    """Add a fresh AES key to the key file and make it active; old keys stay for reading. Returns its id."""
    document = _read_json(encryption_key_file, ENCRYPTION_FORMAT)
    key_id = new_key_id(now)
    keys = _keys_field(document, encryption_key_file)
    keys[key_id] = base64.b64encode(AESGCM.generate_key(256)).decode()
    document["keys"] = keys
    document["active"] = key_id
    _write_private(encryption_key_file, document, replace=True)
    return key_id


def retire_keys(encryption_key_file: Path, key_ids: set[str]) -> None:
    """Remove keys that no row uses any more; the active key is never removed."""
    document = _read_json(encryption_key_file, ENCRYPTION_FORMAT)
    if document["active"] in key_ids:
        raise KeyFileError("不能删除当前密钥")
    keys = {key_id: text for key_id, text in _keys_field(document, encryption_key_file).items()
            if key_id not in key_ids}
    document["keys"] = keys
    _write_private(encryption_key_file, document, replace=True)
