"""Domain errors, each with a machine-readable code and an HTTP status."""

from __future__ import annotations


class DomainError(Exception):
    """Refused by the domain. ``code`` is stable; ``message`` is for people."""

    code = "error"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    code = "not_found"
    status = 404


class NotMember(DomainError):
    """The caller is not a member of the conversation (same answer as not found)."""

    code = "not_member"
    status = 403


class Forbidden(DomainError):
    code = "forbidden"
    status = 403


class Unauthenticated(DomainError):
    code = "unauthenticated"
    status = 401


class Throttled(DomainError):
    code = "too_many_attempts"
    status = 429


class InvalidInput(DomainError):
    code = "invalid_input"
    status = 422


class InvalidLogin(InvalidInput):
    """A login outside 2 to 64 letters, digits or ``. _ - @``."""

    code = "invalid_login"


class InvalidDisplayName(InvalidInput):
    """A display name that is empty or longer than 100 characters."""

    code = "invalid_display_name"


class UnknownMessageType(DomainError):
    code = "unknown_message_type"
    status = 422


class BodyTooLarge(DomainError):
    code = "body_too_large"
    status = 413


class LoginTaken(DomainError):
    code = "login_taken"
    status = 409


class Overloaded(DomainError):
    """The server is too far behind checking signatures: nothing was stored; retry later."""

    code = "overloaded"
    status = 503


class Unavailable(DomainError):
    """The store cannot be reached: nothing was done; retry later."""

    code = "store_unavailable"
    status = 503


class OutcomeUnknown(DomainError):
    """A message was sent to the store, which did not confirm it in time.

    It may or may not be stored: resending it with the same ``client_id`` is
    safe (it is stored once; the answer then says ``duplicate`` if it was).
    """

    code = "store_outcome_unknown"
    status = 503


class E2EEError(DomainError):
    """A message or key refused by the end-to-end checks; ``code`` says which."""

    status = 422

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ConversationArchived(DomainError):
    """The conversation is archived: read-only for both members until a supervisor restores it."""

    code = "conversation_archived"
    status = 409


class ConversationDeleted(DomainError):
    """The beneficiary's account was deleted: only a tombstone of the conversation is left."""

    code = "conversation_deleted"
    status = 410


class WrongPassword(DomainError):
    """A password confirmation (for example before deleting one's account) did not match."""

    code = "wrong_password"
    status = 403


class InvalidDate(InvalidInput):
    """A date the thread cannot hold: in the past, before creation, too far ahead, ends first."""

    code = "invalid_date"


class RenewalConflict(DomainError):
    """Another renewal of the same person's recovery key replaced the backup first."""

    code = "renewal_conflict"
    status = 409


class InvalidTransition(DomainError):
    """An item's event that does not follow from its current state (docs/protocol.md)."""

    code = "invalid_transition"
    status = 409


class UnknownItem(DomainError):
    """An event names an item that this conversation does not hold (or of another kind)."""

    code = "unknown_item"
    status = 422


class ItemExists(DomainError):
    """A ``created`` event reuses the id of an item of this conversation."""

    code = "item_exists"
    status = 409


class UnknownTarget(DomainError):
    """An edit or a delete points at a seq this conversation does not hold."""

    code = "unknown_target"
    status = 422


class NotOwnMessage(DomainError):
    """Only the sender of a message may edit or delete it."""

    code = "not_own_message"
    status = 403


class NotEditable(DomainError):
    """That message cannot be edited or deleted (a system event, an item, already deleted)."""

    code = "not_editable"
    status = 422


class AttachmentTooLarge(DomainError):
    """An upload is larger than ``ATTACHMENT_MAX_BYTES`` allows (refused while streaming)."""

    code = "attachment_too_large"
    status = 413


class AttachmentQuotaExceeded(DomainError):
    """The uploader's stored attachments would pass ``ATTACHMENT_QUOTA_BYTES``."""

    code = "attachment_quota_exceeded"
    status = 413


class AttachmentRateLimited(DomainError):
    """More than ``ATTACHMENT_UPLOADS_PER_HOUR`` uploads in the last hour."""

    code = "attachment_rate_limited"
    status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AttachmentNotFound(DomainError):
    """No such blob (never uploaded, removed as an orphan, or its message was deleted)."""

    code = "attachment_not_found"
    status = 404


class AttachmentExpired(DomainError):
    """The blob's lifetime (``ATTACHMENT_TTL_DAYS``) is over: its content is deleted."""

    code = "attachment_expired"
    status = 410


class AttachmentMismatch(DomainError):
    """An ``attachment`` message names a blob of another conversation or sender, or with
    another size."""

    code = "attachment_mismatch"
    status = 422


class AttachmentInUse(DomainError):
    """Another message already refers to that blob (one message per upload)."""

    code = "attachment_in_use"
    status = 409


class InvalidGrant(DomainError):
    """A download grant that does not match the blob, or has ended."""

    code = "invalid_grant"
    status = 403
