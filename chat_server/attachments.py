"""AttachmentService: uploads, downloads and the lifetime of attachment blobs.

The server never reads a blob (the device encrypted it, docs/crypto-format.md,
"Attachments"); it checks who may write and read it, how big it is, and when
it goes:

- an upload is streamed into the blob store for one conversation, by one of
  its members, refused while streaming past ``ATTACHMENT_MAX_BYTES`` (as
  ciphertext: ``ciphertext_size``) or the uploader's ``ATTACHMENT_QUOTA_BYTES``,
  at most ``ATTACHMENT_UPLOADS_PER_HOUR`` per uploader;
- an ``attachment`` message names the blob (``meta.blob``, ``meta.size``): it must
  be the sender's own upload for that conversation with that size, not named
  by another message; once stored, the blob is bound to the message's ``seq``;
- a download is served to the current members of the blob's conversation;
- the sweep removes uploads no message named within ``ATTACHMENT_ORPHAN_SECONDS``
  and deletes the content of blobs older than ``ATTACHMENT_TTL_DAYS`` (the record
  stays: a download then answers ``attachment_expired``);
- deleting an attachment message deletes its blob; erasing an account
  deletes the blobs of its conversations and its own (``erase_user``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from chat_server.crypto.attachment import ciphertext_size
from chat_server.crypto.tokens import new_token, token_hash
from chat_server.rooms.errors import (
    AttachmentExpired,
    AttachmentInUse,
    AttachmentMismatch,
    AttachmentNotFound,
    AttachmentQuotaExceeded,
    AttachmentRateLimited,
    AttachmentTooLarge,
    InvalidGrant,
)
from chat_server.rooms.models import Conversation, StoredMessage, User
from chat_server.rooms.service import ConversationService, writable
from chat_server.rooms.types import BLOB_ID
from chat_server.settings import Settings
from chat_server.storage.base import MessageStore, StoreError
from chat_server.storage.blobs import Blob, BlobStore, BlobTooLarge

log = logging.getLogger(__name__)

Clock = Callable[[], float]
#: Records the sweep handles per kind and run (the next run continues).
SWEEP_BATCH = 200
DAY = 86400.0
#: How long a download grant for a scanning service lasts.
GRANT_SECONDS = 300.0


def new_blob_id() -> str:
    """A random blob id (24 characters of ``[A-Za-z0-9_-]``)."""
    return secrets.token_urlsafe(18)


class AttachmentService:
    """See the module docstring."""

    def __init__(
        self,
        blobs: BlobStore,
        messages: MessageStore,
        conversations: ConversationService,
        settings: Settings,
        clock: Clock,
    ) -> None:
        self._blobs = blobs
        self._messages = messages
        self._conversations = conversations
        self._settings = settings
        self._clock = clock
        #: The largest blob accepted: a file of ``ATTACHMENT_MAX_BYTES``, encrypted.
        self.max_blob_bytes = ciphertext_size(settings.attachment_max_bytes)

    def limits(self) -> dict[str, Any]:
        """What the apps check before encrypting (``GET /api/attachments/limits``)."""
        s = self._settings
        return {
            "max_bytes": s.attachment_max_bytes,
            "max_blob_bytes": self.max_blob_bytes,
            "types": list(s.attachment_types),
            "image_quality": s.attachment_image_quality,
            "ttl_days": s.attachment_ttl_days,
            "quota_bytes": s.attachment_quota_bytes,
            "scan_url": s.attachment_scan_url,
        }

    async def upload(
        self,
        user: User,
        conversation_id: str,
        chunks: AsyncIterable[bytes],
        declared: int | None = None,
    ) -> Blob:
        """Store an upload for ``conversation_id`` (the caller must be a member of it).

        ``declared`` (the request's Content-Length) lets a too-large upload be refused
        before a byte is read; the size is checked while streaming in any case.
        """
        conv = await self._conversations.member_conversation(user.id, conversation_id)
        writable(conv)
        if declared is not None and declared > self.max_blob_bytes:
            raise self._too_large()
        now = self._clock()
        used, recent = await self._blobs.usage(user.id, now - 3600)
        per_hour = self._settings.attachment_uploads_per_hour
        if recent >= per_hour:
            raise AttachmentRateLimited(
                f"at most {per_hour} uploads per hour; retry later", math.ceil(3600 / per_hour)
            )
        room = self._settings.attachment_quota_bytes - used
        if room <= 0 or (declared is not None and declared > room):
            raise self._over_quota()
        limit = min(self.max_blob_bytes, room)
        blob = Blob(new_blob_id(), user.id, conv.id, 0, now)
        try:
            return await self._blobs.put(blob, chunks, limit)
        except BlobTooLarge:
            too_large = limit == self.max_blob_bytes
            raise (self._too_large() if too_large else self._over_quota()) from None

    def _too_large(self) -> AttachmentTooLarge:
        return AttachmentTooLarge(
            f"a file is at most {self._settings.attachment_max_bytes} bytes "
            f"({self.max_blob_bytes} bytes once encrypted)"
        )

    def _over_quota(self) -> AttachmentQuotaExceeded:
        return AttachmentQuotaExceeded(
            f"your attachments would take more than {self._settings.attachment_quota_bytes} "
            "bytes; delete some or wait for them to expire"
        )

    async def download(self, user: User, blob_id: str) -> tuple[Blob, AsyncIterator[bytes]]:
        """The blob's record and content, for a current member of its conversation."""
        blob = await self._member_blob(user, blob_id)
        content = await self._blobs.open(blob_id)
        if content is None:
            raise AttachmentNotFound("no such attachment")
        return blob, content

    async def grant(self, user: User, blob_id: str) -> tuple[str, float]:
        """A download grant for one blob (a member asks, for a scanning service):
        ``(token, expires_at)``. A new grant replaces the previous one."""
        blob = await self._member_blob(user, blob_id)
        token = new_token()
        expires_at = self._clock() + GRANT_SECONDS
        if not await self._blobs.set_grant(blob.id, token_hash(token), expires_at):
            raise AttachmentNotFound("no such attachment")
        return token, expires_at

    async def download_granted(self, blob_id: str, token: str) -> tuple[Blob, AsyncIterator[bytes]]:
        """The blob for the holder of a valid grant (no session: a scanning service)."""
        blob = await self._blobs.get(blob_id) if BLOB_ID.fullmatch(blob_id) else None
        if (
            blob is None
            or blob.grant_hash is None
            or not hmac.compare_digest(blob.grant_hash, token_hash(token))
            or (blob.grant_expires or 0) < self._clock()
        ):
            raise InvalidGrant("this download grant is unknown or has ended")
        if blob.expired_at is not None:
            raise AttachmentExpired("this attachment has expired and was deleted")
        content = await self._blobs.open(blob_id)
        if content is None:
            raise AttachmentNotFound("no such attachment")
        return blob, content

    async def _member_blob(self, user: User, blob_id: str) -> Blob:
        """The blob if ``user`` is a member of its conversation (else ``NotMember``) and
        it has not expired."""
        blob = await self._blobs.get(blob_id) if BLOB_ID.fullmatch(blob_id) else None
        if blob is None:
            raise AttachmentNotFound("no such attachment")
        await self._conversations.member_conversation(user.id, blob.conversation_id)
        if blob.expired_at is not None:
            raise AttachmentExpired("this attachment has expired and was deleted")
        return blob

    async def check_send(
        self, conv: Conversation, sender_id: str, client_id: str, meta: Mapping[str, Any]
    ) -> None:
        """The checks of an ``attachment`` message before it is stored (a resend of the
        message that already names the blob passes: the store answers it)."""
        blob = await self._blobs.get(str(meta["blob"]))
        if blob is None:
            raise AttachmentNotFound("meta.blob names no uploaded attachment")
        if blob.conversation_id != conv.id or blob.owner_id != sender_id:
            raise AttachmentMismatch("meta.blob was uploaded by someone else or for elsewhere")
        if blob.size != meta["size"]:
            raise AttachmentMismatch(f"meta.size must be the blob's size ({blob.size})")
        if blob.seq is not None:
            page = await self._messages.messages_after(conv.id, blob.seq - 1, 1)
            first = page[0] if page else None
            if first is not None and (first.client_id, first.sender_id) == (client_id, sender_id):
                return
            raise AttachmentInUse("another message already carries this attachment")
        if blob.expired_at is not None:
            raise AttachmentExpired("this attachment has expired and was deleted")

    async def after_send(self, conv: Conversation, stored: StoredMessage) -> None:
        """Bind a sent attachment to its message; a deleted attachment message loses its blob.

        The message is stored already: a store failure here is logged, and the
        sweep binds (or the next delete removes) what was missed.
        """
        try:
            if stored.msg_type == "attachment":
                if not await self._blobs.bind(str(stored.meta["blob"]), stored.seq):
                    where = {"conversation_id": conv.id, "seq": stored.seq}
                    log.warning("attachment not bound", extra=where)
            elif stored.msg_type == "delete":
                target_seq = stored.meta["target_seq"]
                if not isinstance(target_seq, int):  # validated before storing
                    return
                page = await self._messages.messages_after(conv.id, target_seq - 1, 1)
                if page and page[0].seq == target_seq and page[0].msg_type == "attachment":
                    await self._blobs.delete([str(page[0].meta.get("blob"))])
        except StoreError as exc:
            log.warning(
                "attachment bookkeeping failed",
                extra={"conversation_id": conv.id, "error": str(exc)},
            )

    async def sweep(self) -> dict[str, int]:
        """One pass: remove orphan uploads, expire old blobs. Returns counts per kind."""
        now = self._clock()
        orphans = bound = expired = 0
        stale = await self._blobs.unbound_before(
            now - self._settings.attachment_orphan_seconds, SWEEP_BATCH
        )
        for blob in stale:
            # A message may name it although the bind after its send failed: bind it now.
            found = await self._messages.messages_by_meta(blob.conversation_id, "blob", blob.id, 1)
            sent = [m for m in found if m.msg_type == "attachment"]
            if sent and await self._blobs.bind(blob.id, sent[0].seq):
                bound += 1
                continue
            orphans += await self._blobs.delete([blob.id])
        old = await self._blobs.live_before(
            now - self._settings.attachment_ttl_days * DAY, SWEEP_BATCH
        )
        for blob in old:
            if await self._blobs.expire(blob.id, now):
                expired += 1
        counts = {"orphans": orphans, "bound": bound, "expired": expired}
        if any(counts.values()):
            log.info("attachment sweep", extra=counts)
        return counts

    async def erase_user(self, user_id: str, conversation_ids: Sequence[str]) -> int:
        """``ErasureHook``: delete the blobs of ``conversation_ids`` and ``user_id``'s own."""
        ids = set(await self._blobs.of_conversations(conversation_ids))
        ids.update(await self._blobs.of_owner(user_id))
        return await self._blobs.delete(sorted(ids))


async def sweep_periodically(
    service: AttachmentService, interval: float, stopping: asyncio.Event
) -> None:
    """Run ``service.sweep`` every ``interval`` seconds until ``stopping`` is set.

    A store outage skips a pass with one warning line; the next pass catches up.
    """
    while not stopping.is_set():
        try:
            await service.sweep()
        except StoreError as exc:
            log.warning("attachment sweep skipped: store unavailable", extra={"error": str(exc)})
        except Exception:
            log.exception("attachment sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
