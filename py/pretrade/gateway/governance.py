"""The fat-finger model's lifecycle status as the gateway applies it (pretrade.models.status).

approved: the model binds (a FAT_FINGER rejection rejects). candidate or shadow: the model is
scored on every order that reaches its rule and its call is recorded (a `shadow-*/model` decision
row, `.gw.inputs`), but it never rejects. retired: not loaded, as if no model were configured.
The status is read from the models folder's status log at start, and again when a person asks
(`.gw.model_status[]` on the control port); the gateway never writes the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pretrade.models.status import Change, StatusBook, StatusError

log = logging.getLogger(__name__)

BINDING = "approved"
NOT_BINDING = ("candidate", "shadow")
RETIRED = "retired"


@dataclass(frozen=True)
class ModelStatus:
    """A model's status and the logged change that set it (None: the card's field or legacy)."""

    model: str
    version: str
    status: str
    change: Change | None

    @property
    def binds(self) -> bool:
        return self.status == BINDING

    def describe(self) -> str:
        """One line for logs and the control port: what the status means for orders, and who set it."""
        what = {BINDING: "binding: its FAT_FINGER rejections reject orders",
                RETIRED: "not used: orders are checked without it"}.get(
            self.status, "NOT BINDING: scored on every order and its call recorded (shadow-*/model decision "
                         "rows), it never rejects until a person approves it (pretrade model-status approve "
                         f"{self.model} --who NAME --why TEXT, then .gw.model_status[] or a restart)")
        c = self.change
        by = f" (set {c.time} by {c.who}: {c.why})" if c is not None else ""
        return f"fat-finger model {self.version or self.model} is {self.status}{by}: {what}"


def read_status(model_path: str | Path, version: str | None = None) -> ModelStatus:
    """The status of the model at `model_path` (its card's version unless given) from the status
    log and card in its folder; the model's name is the file's stem (models/fatfinger.onnx:
    fatfinger). StatusError when its card is missing."""
    path = Path(model_path)
    book = StatusBook(path.parent)
    name = path.stem
    version = version or str(book.card(name).get("version", ""))
    status = book.status(name, version)
    last = [c for c in book.history(name) if c.version == version]
    return ModelStatus(name, version, status, last[-1] if last else None)


def status_at_start(model_path: str | Path) -> ModelStatus:
    """read_status for a gateway starting up: a status that cannot be read (no card) counts as
    shadow, never as approved; the model's own loading then says what is wrong with it."""
    try:
        return read_status(model_path)
    except StatusError as e:
        log.error("fat-finger model status unknown (%s): treated as shadow (scored, not binding)", e)
        return ModelStatus(Path(model_path).stem, "", "shadow", None)
