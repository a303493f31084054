"""Problems found in input data, named by kind so a run can summarise and --strict can refuse them.

Real datasets have flaws (the community-fixed Dsb2018 has masks overlapping by 1-2 px), so the
converter reports a problem, skips or repairs what it must, and goes on; ``strict`` turns any
problem into a :class:`DatasetError`.
"""
from __future__ import annotations

from dataclasses import dataclass

# Every kind the Dsb2018 reader reports, with what it does about it.
ISSUE_KINDS = {
    "unreadable_file": "an image or mask that cannot be decoded (skipped)",
    "missing_images_folder": "a sample folder without images/ (skipped)",
    "missing_image": "an images/ folder without an image file (skipped)",
    "no_masks": "an image without any mask, in masks/ or the labels CSV (skipped)",
    "size_mismatch": "a mask whose size differs from its image (mask skipped)",
    "empty_mask": "a mask without foreground pixels (skipped)",
    "non_binary_mask": "a mask with more than one foreground value (kept: every value > 0)",
    "bad_rle": "a run-length string that cannot be decoded (mask skipped)",
    "duplicate_mask": "a mask identical to another of the same image (duplicate skipped)",
    "overlapping_masks": "two masks sharing pixels (both kept, as COCO allows)",
    "unknown_image": "a labels-CSV row or --val-ids entry naming no image folder (ignored)",
}


@dataclass(frozen=True)
class Issue:
    """One problem in one file; ``kind`` is a key of :data:`ISSUE_KINDS`."""

    kind: str
    path: str
    message: str

    def __post_init__(self):
        if self.kind not in ISSUE_KINDS:
            raise ValueError(f"unknown issue kind {self.kind!r}")

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.kind}]"


class DatasetError(Exception):
    """Input that cannot be converted; the message names the file and the problem on one line."""

    @classmethod
    def from_issue(cls, issue: Issue) -> "DatasetError":
        return cls(f"{issue} (refused by --strict)")
