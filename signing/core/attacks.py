"""What every revision after a signature changed, and whether it may (issue 14, "beyond a library's verdict").

`review_revisions` reads the document with pyHanko's reader and compares each revision with the one before it
through the reader's historical revisions (`PdfFileReader.get_historical_resolver`, the base of pyHanko's
difference analysis, `pyhanko.sign.diff_analysis`). Every change is a `Change` (kind, description, allowed or
not allowed) and every change that may not be made after a signature is a `Finding` against that revision and
against each signature before it (TOTAL-FAILED / FORMAT_FAILURE, ETSI TS 119 102-1 section 5.1.3).

The rules, stricter than pyHanko's `StandardDiffPolicy` where that policy lets an attack through (Mainka,
Mladenov, Rohlmann: "Shadow Attacks: Hiding and Replacing Content in Signed PDFs", NDSS 2021; Mladenov et al.:
"1 Trillion Dollar Refund", CCS 2019; ISO 32000-2 sections 12.8.2.2 DocMDP and 12.8.2.4 FieldMDP):

Always allowed (ETSI EN 319 142-1 section 5.4, ISO 32000-2 section 12.8.2.2.1 note on DSS and document time-stamps):
- `dss`: a /DSS added to or changed in the catalog; `document-timestamp`: a new signature field whose /V is a
  /DocTimeStamp; `metadata`: /Info, the catalog's /Metadata, /Extensions, /MarkInfo, /Version.

Allowed as the permissions of the signatures before allow (DocMDP P of the certification signature, applying to
it and every signature after it; FieldMDP of each signature for its own locks):
- `signature`: a new signature field, or a signature put into an empty signature field (DocMDP P=2 or 3, or no
  DocMDP). A visible signature's widget appearance is accepted as the signature's own.
- `form-filling`: a changed value of a field that is not a signature field, with its widgets' new /AP and /AS
  (DocMDP P=2 or 3, or no DocMDP; not a field a FieldMDP locks: `fieldmdp_violation`).
- `annotation`: a new or changed annotation that is not a widget (DocMDP P=3 or no DocMDP), *only* of the
  comment subtypes Text, Popup, Link, Highlight, Underline, StrikeOut, Squiggly, Caret whose normal appearance,
  if any, shows no text (Tj TJ ' "), no XObject or inline image (Do BI), no shading (sh), and fills nothing
  opaque: a fill is accepted in an icon-sized /Rect (at most 32 x 32 points) or under an ExtGState with blend mode
  Multiply/Darken or fill alpha below 1. Any other annotation is `shadow_replace` ("Replace via Overlay").
  A permission broken is `docmdp_violation` (ISO 32000-2 table 257) against the certification signature and the
  signatures after it.

Never allowed (each a finding against every signature before the revision):
- `shadow_hide` ("Hide"): an annotation or form field removed, an annotation or widget made hidden (the /F flags
  Invisible, Hidden or NoView set), the catalog's /OCProperties changed (optional content switched), an object
  freed.
- `shadow_replace` ("Replace"): a non-comment or opaque annotation added or changed (overlay), a hidden
  annotation or widget made visible, a new form field that is not a signature field, a field's or widget's
  appearance replaced without a value change ("Replace via Overwrite"), a changed /DA, /MK, /Rect, /Opt or
  /MaxLen, a form font in /DR changed, /NeedAppearances set (every field's appearance redrawn by the viewer).
- `shadow_hide_and_replace` ("Hide-and-Replace"): the trailer's /Root redirected, the catalog's /Pages changed,
  the page list changed, a page's content, resources or boxes changed (inherited attributes included), or any
  object that existed before overridden without one of the explanations above (object override).
- `signature_replaced`: the /V of a signed signature field changed.
- `modification_not_allowed`: everything else: other catalog keys (/Names, /OpenAction, /AA, /Outlines ...), a
  field's /Ff or other keys, /AcroForm keys other than /Fields, /SigFlags, /DR and /DA, new objects reachable
  from no explained change. pyHanko's own verdict (`DEFAULT_DIFF_POLICY`, the engine's `modification_level`) is
  not repeated here: it allows no annotation at all and rejects a direct /AcroForm updated by pyHanko's own
  signer (/SigFlags), so it cannot serve as a no-false-alarm baseline; the historical resolvers, its orphan and
  identical-object rules are used as they are.
- The incremental-saving findings of `signing.core.structure` (`incremental_save_no_xref` for a revision,
  `incremental_save_unsigned_objects` after the last one) are copied to the signatures before them.

Orphaned new objects (referenced from nothing) and overrides by an identical object are ignored, as pyHanko's
policy ignores them. Bounds: the page tree, field tree and deep comparisons are walked iteratively with seen-sets
and node budgets (`_MAX_NODES`); anything pyHanko raises on hostile input becomes `DamagedPdf`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import HistoricalResolver, PdfFileReader
from pyhanko.sign.diff_analysis.policies import _find_orphans, _is_id
from pyhanko.sign.fields import FieldMDPSpec, MDPPerm, enumerate_sig_fields
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature

from signing.core.errors import DamagedPdf, PdfRefused
from signing.core.report import Change, ChangeClass, Finding, SubIndication
from signing.core.structure import PdfStructure

__all__ = ["RevisionReview", "review_revisions"]

_FAIL: Final = SubIndication.FORMAT_FAILURE
_MAX_NODES: Final = 200_000
"""Most objects one deep comparison or tree walk visits."""
_MAX_PAGES: Final = 10_000
_MAX_APPEARANCE: Final = 1024 * 1024
_ICON_AREA: Final = 32 * 32
_COMMENT_SUBTYPES: Final = frozenset({"/Text", "/Popup", "/Link", "/Highlight", "/Underline", "/StrikeOut",
                                      "/Squiggly", "/Caret"})
_HIDING_FLAGS: Final = 1 | 2 | 32
"""Annotation flags Invisible (bit 1), Hidden (bit 2), NoView (bit 6), ISO 32000-2 section 12.5.3."""
_EMPTY: Final = generic.DictionaryObject()  # type: ignore[no-untyped-call]  # unannotated in pyHanko; never written
_NOT_FOLLOWED: Final = frozenset({"/Parent", "/P", "/Data"})
"""Keys a deep comparison does not follow: back-links up a tree and a signature reference's /Data (the catalog)."""
_INHERITED: Final = ("/Resources", "/MediaBox", "/CropBox", "/Rotate")
_ALWAYS_ALLOWED: Final = frozenset({"dss", "document-timestamp", "metadata"})
_PAINTS: Final = re.compile(rb"(?<![A-Za-z0-9*'\"])(Tj|TJ|Do|BI|sh|'|\")(?![A-Za-z0-9*])")
_FILLS: Final = re.compile(rb"(?<![A-Za-z0-9*])(f\*?|F|B\*?|b\*?)(?![A-Za-z0-9*])")
_ALLOWED_CATALOG: Final = {"/DSS": "dss", "/Metadata": "metadata", "/Extensions": "metadata",
                           "/MarkInfo": "metadata", "/Version": "metadata", "/Perms": "signature"}


@dataclass(frozen=True, slots=True)
class RevisionReview:
    """The review of the revisions after the first (numbers are `RawRevision.number`: 1 is the original).

    `by_signature` (keyed by the signature's /ByteRange as pyHanko reads it) already holds every finding of a later
    revision that makes that signature not valid, permission violations and incremental-saving findings included:
    the engine needs no other propagation. `by_revision` holds the findings of each revision, `changes` what it
    changed, each classified."""

    by_revision: dict[int, tuple[Finding, ...]]
    by_signature: dict[tuple[int, ...], tuple[Finding, ...]]
    changes: dict[int, tuple[Change, ...]]


def review_revisions(structure: PdfStructure, reader: PdfFileReader) -> RevisionReview:
    """Classify what each revision changed (module docstring); raise `DamagedPdf` when pyHanko cannot read it.

    `reader`: the reader the caller opened under the input policy (the validator's one parse,
    `signing.core.inspect.open_signed_pdf`), so every object read here is read within its bounds."""
    try:
        return _Review(reader, structure).run()
    except PdfRefused:
        raise
    except Exception as exc:  # hostile input: pyHanko raises many types; all mean "unreadable"
        raise DamagedPdf(f"the revisions cannot be compared: {type(exc).__name__}: {exc}"[:500]) from exc


# --- one change ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    kind: str
    description: str
    code: str | None = None
    """The finding of an intrinsically not-allowed change (shadow_*, modification_not_allowed ...)."""
    field_name: str | None = None
    """For form-filling: the field a FieldMDP may lock."""


@dataclass(slots=True)
class _Signature:
    byte_range: tuple[int, ...]
    revision: int
    """pyHanko's revision index of the signed revision."""
    docmdp: MDPPerm | None
    fieldmdp: FieldMDPSpec | None
    name: str


@dataclass(slots=True)
class _Diff:
    old: HistoricalResolver
    new: HistoricalResolver
    revision: int
    refs: set[generic.Reference]
    items: list[_Item] = field(default_factory=list)
    explained: set[generic.Reference] = field(default_factory=set)
    touches: dict[generic.Reference, bool] = field(default_factory=dict)

    def explain(self, obj: object) -> None:
        """Mark `obj` (a reference, or an object holding references) and the new objects it reaches as seen."""
        if isinstance(obj, generic.IndirectObject):
            self.explained.add(obj.reference)
            obj = self.new(obj.reference)  # an object rewritten here may reach new objects: look inside it
        if isinstance(obj, generic.PdfObject):
            self.explained |= self.new.collect_dependencies(obj, since_revision=self.revision)

    def add(self, kind: str, description: str, code: str | None = None, field_name: str | None = None) -> None:
        self.items.append(_Item(kind, description, code, field_name))


class _Review:
    def __init__(self, reader: PdfFileReader, structure: PdfStructure) -> None:
        self.reader = reader
        self.structure = structure
        self.total = reader.xrefs.total_revisions
        self.numbers = self._raw_numbers()
        self.signatures = self._signatures()

    def _raw_numbers(self) -> dict[int, int]:
        by_offset = {r.xref_offset: r.number for r in self.structure.revisions}
        numbers: dict[int, int] = {}
        for index in range(self.total):
            start = self.reader.xrefs.get_startxref_for_revision(index)
            numbers[index] = by_offset.get(start, index + 1)
        return numbers

    def _signatures(self) -> list[_Signature]:
        result: list[_Signature] = []
        for name, _value, sig_field in enumerate_sig_fields(self.reader, filled_status=True):
            try:
                embedded = EmbeddedPdfSignature(self.reader, sig_field, name)
                byte_range = tuple(int(n) for n in embedded.byte_range)
                result.append(_Signature(byte_range, embedded.signed_revision, embedded.docmdp_level,
                                         embedded.fieldmdp, name))
            except Exception:  # noqa: BLE001, S112 - a signature pyHanko cannot read: signing.core.structure says why
                continue
        # signatures the newest revision's form no longer lists (a hide-and-replace drops them) still count
        known = {s.byte_range for s in result}
        index_of = {number: index for index, number in self.numbers.items()}
        for raw in self.structure.signatures:
            if raw.byte_range is None or raw.revision is None or raw.byte_range in known:
                continue
            known.add(raw.byte_range)
            result.append(_Signature(raw.byte_range, index_of.get(raw.revision, raw.revision - 1), None, None,
                                     raw.field_name or f"object {raw.object_number}"))
        result.sort(key=lambda s: s.revision)
        return result

    def run(self) -> RevisionReview:
        by_revision: dict[int, list[Finding]] = {}
        by_signature: dict[tuple[int, ...], list[Finding]] = {s.byte_range: [] for s in self.signatures}
        changes: dict[int, tuple[Change, ...]] = {}
        for index in range(1, self.total):
            number = self.numbers[index]
            items = self._diff(index)
            classified: list[Change] = []
            revision_findings: list[Finding] = []
            for item in items:
                allowed = True
                if item.code is not None:
                    allowed = False
                    finding = Finding(item.code, f"revision {number}: {item.description}", _FAIL, number)
                    revision_findings.append(finding)
                    for signature in self.signatures:
                        if signature.revision < index:
                            by_signature[signature.byte_range].append(finding)
                for signature in self.signatures:
                    if signature.revision >= index:
                        continue
                    violation = self._violation(item, signature, number)
                    if violation is not None:
                        allowed = False
                        by_signature[signature.byte_range].append(violation)
                        if violation not in revision_findings:
                            revision_findings.append(violation)
                classified.append(Change(item.kind, item.description,
                                         ChangeClass.ALLOWED if allowed else ChangeClass.NOT_ALLOWED))
            changes[number] = tuple(classified)
            if revision_findings:
                by_revision[number] = revision_findings
        self._copy_isa(by_signature)
        return RevisionReview(by_revision={k: tuple(v) for k, v in by_revision.items()},
                              by_signature={k: tuple(v) for k, v in by_signature.items()}, changes=changes)

    def _copy_isa(self, by_signature: dict[tuple[int, ...], list[Finding]]) -> None:
        for finding in self.structure.findings:
            if finding.sub_indication is None:
                continue
            for signature in self.signatures:
                end = signature.byte_range[-2] + signature.byte_range[-1] if len(signature.byte_range) >= 2 else 0
                signed = self.structure.revision_at(end)
                if finding.revision is None or (signed is not None and signed.number < finding.revision):
                    by_signature[signature.byte_range].append(finding)

    def _certification(self, signature: _Signature) -> _Signature | None:
        for candidate in self.signatures:
            if candidate.docmdp is not None and candidate.revision <= signature.revision:
                return candidate
        return None

    def _violation(self, item: _Item, signature: _Signature, number: int) -> Finding | None:
        if item.code is not None or item.kind in _ALWAYS_ALLOWED:
            return None
        certification = self._certification(signature)
        permission = certification.docmdp if certification is not None else None
        allowed_kinds = {MDPPerm.NO_CHANGES: set(), MDPPerm.FILL_FORMS: {"signature", "form-filling"},
                         MDPPerm.ANNOTATE: {"signature", "form-filling", "annotation"}}
        if permission is not None and item.kind not in allowed_kinds[permission]:
            return Finding("docmdp_violation",
                           f"revision {number}: {item.description}, which the certification signature "
                           f"'{certification.name if certification else ''}' forbids (DocMDP P={permission.value}, "
                           "ISO 32000-2 section 12.8.2.2 table 257)", _FAIL, number)
        if (item.kind == "form-filling" and item.field_name is not None and signature.fieldmdp is not None
                and signature.fieldmdp.is_locked(item.field_name)):
            return Finding("fieldmdp_violation",
                           f"revision {number}: {item.description}, a field the signature '{signature.name}' locks "
                           "(FieldMDP, ISO 32000-2 section 12.8.2.4)", _FAIL, number)
        return None

    # --- the difference of one revision ----------------------------------------------------------------------------

    def _diff(self, index: int) -> list[_Item]:
        old = self.reader.get_historical_resolver(index - 1)
        new = self.reader.get_historical_resolver(index)
        diff = _Diff(old, new, index, set(new.explicit_refs_in_revision()))  # type: ignore[no-untyped-call]  # unannotated in pyHanko
        for ref in sorted(new.refs_freed_in_revision(), key=lambda r: r.idnum):  # type: ignore[no-untyped-call]  # unannotated in pyHanko
            diff.add("freed", f"object {ref.idnum} {ref.generation} R freed (content removed)", "shadow_hide")
        if not diff.refs:
            return diff.items
        _Trailer(diff).compare()
        _Pages(diff).compare()
        _Fields(diff).compare()
        self._unexplained(diff)
        return diff.items

    @staticmethod
    def _unexplained(diff: _Diff) -> None:
        ignored = set(_find_orphans(diff.new))
        for ref in sorted(diff.refs - diff.explained - ignored, key=lambda r: r.idnum):
            obj = diff.new(ref)
            if isinstance(obj, generic.StreamObject) and obj.get("/Type") in ("/XRef", "/ObjStm"):
                continue
            existed = not diff.old.is_ref_unassignable(ref) and _exists(diff.old, ref)
            if existed:
                if _is_id(diff.old(ref), obj):
                    continue
                diff.add("object-override", f"object {ref.idnum} {ref.generation} R of the signed document is "
                         "redefined", "shadow_hide_and_replace")
            else:
                diff.add("unsigned-objects", f"new object {ref.idnum} {ref.generation} R is used by no allowed "
                         "change", "modification_not_allowed")


def _exists(resolver: HistoricalResolver, ref: generic.Reference) -> bool:
    try:
        return resolver.reader.xrefs.get_historical_ref(ref, resolver.revision) is not None
    except (KeyError, ValueError):
        return False


# --- the trailer and the catalog -----------------------------------------------------------------------------------


class _Trailer:
    def __init__(self, diff: _Diff) -> None:
        self.diff = diff

    def compare(self) -> None:
        diff = self.diff
        old_trailer, new_trailer = diff.old.trailer_view, diff.new.trailer_view
        old_root, new_root = old_trailer.raw_get("/Root"), new_trailer.raw_get("/Root")
        if _ref_of(old_root) != _ref_of(new_root):
            diff.add("catalog", "the trailer's /Root points to another catalog", "shadow_hide_and_replace")
            return
        old_info = _historical(diff.old, old_trailer.raw_get("/Info")) if "/Info" in old_trailer else None
        new_info_raw = _historical(diff.new, new_trailer.raw_get("/Info")) if "/Info" in new_trailer else None
        if new_info_raw is not None and not _same(diff, old_info, new_info_raw):
            diff.add("metadata", "the document information dictionary (/Info) updated")
        if new_info_raw is not None:
            diff.explain(new_info_raw)
        self._catalog(old_root, new_root)

    def _catalog(self, old_root: Any, new_root: Any) -> None:
        diff = self.diff
        old_catalog, new_catalog = _catalog_of(diff.old), _catalog_of(diff.new)
        if isinstance(new_root, generic.IndirectObject):
            diff.explained.add(new_root.reference)
        keys = set(old_catalog.keys()) | set(new_catalog.keys())
        for key in sorted(keys):
            old_value = old_catalog.raw_get(key) if key in old_catalog else None
            new_value = new_catalog.raw_get(key) if key in new_catalog else None
            if key in ("/AcroForm", "/Pages"):
                if key == "/Pages" and _ref_of(old_value) != _ref_of(new_value):
                    diff.add("page-content", "the catalog's /Pages points to another page tree",
                             "shadow_hide_and_replace")
                continue  # compared by _Pages and _Fields
            if _same(diff, old_value, new_value):
                continue
            if key in _ALLOWED_CATALOG:
                kind = _ALLOWED_CATALOG[key]
                what = {"dss": "the Document Security Store (/DSS) added or updated",
                        "signature": "the catalog's /Perms (certification) updated"}.get(kind, f"{key} updated")
                diff.add(kind, what)
                if new_value is not None:
                    diff.explain(new_value)
            elif key == "/OCProperties":
                diff.add("optional-content", "the optional content configuration (/OCProperties) changed",
                         "shadow_hide")
                if new_value is not None:
                    diff.explain(new_value)
            else:
                diff.add("catalog", f"the catalog's {key} changed", "modification_not_allowed")
                if new_value is not None:
                    diff.explain(new_value)


def _catalog_of(resolver: HistoricalResolver) -> Any:
    """The catalog as of the resolver's revision (the trailer view's references resolve to the newest one)."""
    catalog = resolver(resolver.root_ref)
    if not isinstance(catalog, generic.DictionaryObject):
        raise DamagedPdf("the trailer's /Root is not a dictionary")
    return catalog


def _historical(resolver: HistoricalResolver, value: Any) -> Any:
    """A trailer entry's reference bound to `resolver` (so it resolves as of that revision)."""
    if isinstance(value, generic.IndirectObject):
        return generic.IndirectObject(value.idnum, value.generation, resolver)  # type: ignore[no-untyped-call]  # unannotated in pyHanko
    return value


def _ref_of(value: Any) -> tuple[int, int] | None:
    if isinstance(value, generic.IndirectObject):
        return (value.idnum, value.generation)
    return None


# --- the pages and their annotations -------------------------------------------------------------------------------


def _page_list(resolver: HistoricalResolver) -> list[tuple[Any, dict[str, Any]]]:
    """(page reference or object, inherited attributes) in order, walked iteratively (ISO 32000-2 7.7.3.4)."""
    root = _catalog_of(resolver)
    pages_ref = root.raw_get("/Pages")
    result: list[tuple[Any, dict[str, Any]]] = []
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Any, dict[str, Any]]] = [(pages_ref, {})]
    while stack:
        node_ref, inherited = stack.pop()
        key = _ref_of(node_ref)
        if key is not None:
            if key in seen:
                raise DamagedPdf(f"the page tree holds object {key[0]} twice (a loop)")
            seen.add(key)
        node = node_ref.get_object()
        if not isinstance(node, generic.DictionaryObject):
            continue
        attrs = dict(inherited)
        for name in _INHERITED:
            if name in node:
                attrs[name] = node.raw_get(name)
        if node.get("/Type") == "/Pages" or "/Kids" in node:
            kids = node.get("/Kids")
            if isinstance(kids, generic.ArrayObject):
                stack.extend((kid, attrs) for kid in reversed(list(kids)))
            # an intermediate node's own keys other than /Kids, /Count, /Parent and inherited ones
            continue
        result.append((node_ref, attrs))
        if len(result) > _MAX_PAGES or len(seen) > _MAX_NODES:
            raise DamagedPdf("the page tree is larger than the analysis bounds")
    return result


class _Pages:
    def __init__(self, diff: _Diff) -> None:
        self.diff = diff

    def compare(self) -> None:
        diff = self.diff
        old_pages, new_pages = _page_list(diff.old), _page_list(diff.new)
        old_refs = [_ref_of(p) for p, _ in old_pages]
        new_refs = [_ref_of(p) for p, _ in new_pages]
        if old_refs != new_refs:
            diff.add("page-content", f"the page list changed ({len(old_refs)} pages before, {len(new_refs)} "
                     "after, or in another order)", "shadow_hide_and_replace")
        self._explain_tree(diff.new)
        for number, ((old_ref, old_attrs), (new_ref, new_attrs)) in enumerate(
                zip(old_pages, new_pages, strict=False), start=1):
            old_page, new_page = old_ref.get_object(), new_ref.get_object()
            if isinstance(new_ref, generic.IndirectObject):
                diff.explained.add(new_ref.reference)
            changed = [key for key in sorted(set(old_page.keys()) | set(new_page.keys()))
                       if key not in ("/Annots", "/Parent", *_INHERITED)
                       and not _same(diff, old_page.raw_get(key) if key in old_page else None,
                                     new_page.raw_get(key) if key in new_page else None)]
            changed += [key for key in _INHERITED if not _same(diff, old_attrs.get(key), new_attrs.get(key))]
            if changed:
                diff.add("page-content", f"page {number}: {', '.join(changed)} changed", "shadow_hide_and_replace")
                for key in changed:
                    if key in new_page:
                        diff.explain(new_page.raw_get(key))
            self._annotations(number, old_page, new_page)

    def _explain_tree(self, resolver: HistoricalResolver) -> None:
        """Intermediate page-tree nodes rewritten only to reach a page (their /Kids compared through the list)."""
        root = _catalog_of(resolver)
        stack = [root.raw_get("/Pages")]
        seen: set[tuple[int, int]] = set()
        while stack and len(seen) < _MAX_NODES:
            node_ref = stack.pop()
            key = _ref_of(node_ref)
            if key is None or key in seen:
                continue
            seen.add(key)
            node = node_ref.get_object()
            if isinstance(node, generic.DictionaryObject) and "/Kids" in node:
                self.diff.explained.add(node_ref.reference)
                kids = node.get("/Kids")
                if isinstance(kids, generic.ArrayObject):
                    if isinstance(node.raw_get("/Kids"), generic.IndirectObject):
                        self.diff.explained.add(node.raw_get("/Kids").reference)
                    stack.extend(kids)

    def _annotations(self, number: int, old_page: Any, new_page: Any) -> None:
        diff = self.diff
        old_annots = _annots(old_page)
        new_annots = _annots(new_page)
        if "/Annots" in new_page and isinstance(new_page.raw_get("/Annots"), generic.IndirectObject):
            diff.explained.add(new_page.raw_get("/Annots").reference)
        old_by_key = {_annot_key(a, i): a for i, a in enumerate(old_annots)}
        new_by_key = {_annot_key(a, i): a for i, a in enumerate(new_annots)}
        for key, annot in old_by_key.items():
            if key not in new_by_key:
                subtype = annot.get_object().get("/Subtype", "?")
                diff.add("annotation", f"page {number}: a {subtype} annotation removed", "shadow_hide")
        for key, annot in new_by_key.items():
            annot_dict = annot.get_object()
            if not isinstance(annot_dict, generic.DictionaryObject):
                continue
            if annot_dict.get("/Subtype") == "/Widget":
                continue  # a form field's widget: _Fields compares it
            old = old_by_key.get(key)
            if old is not None and _same(diff, old, annot):
                continue
            subtype = annot_dict.get("/Subtype", "?")
            diff.explain(annot)
            if old is not None:
                toggled = _flag_toggle(old.get_object(), annot_dict)
                if toggled:
                    diff.add("annotation", f"page {number}: a {subtype} annotation {toggled[0]}", toggled[1])
                    continue
            overlay = _overlay(annot_dict)
            verb = "changed" if old is not None else "added"
            if overlay is not None:
                diff.add("annotation", f"page {number}: a {subtype} annotation {verb} that {overlay} over the "
                         "signed page (shadow attack: replace via overlay)", "shadow_replace")
            else:
                diff.add("annotation", f"page {number}: a {subtype} annotation {verb}")


def _annots(page: Any) -> list[Any]:
    annots = page.get("/Annots") if "/Annots" in page else None
    if not isinstance(annots, generic.ArrayObject):
        return []
    return list(annots)


def _annot_key(annot: Any, index: int) -> tuple[int, int]:
    ref = _ref_of(annot)
    return ref if ref is not None else (-1, index)


def _flags(annot: Any) -> int:
    value = annot.get("/F", 0) if isinstance(annot, generic.DictionaryObject) else 0
    return int(value) if isinstance(value, int) else 0


def _flag_toggle(old: Any, new: Any) -> tuple[str, str] | None:
    was_hidden, is_hidden = bool(_flags(old) & _HIDING_FLAGS), bool(_flags(new) & _HIDING_FLAGS)
    if is_hidden and not was_hidden:
        return "made hidden (/F flags)", "shadow_hide"
    if was_hidden and not is_hidden:
        return "made visible (/F flags)", "shadow_replace"
    return None


def _overlay(annot: generic.DictionaryObject) -> str | None:
    """Why a new or changed annotation paints over the page (the module docstring's rule), or None."""
    subtype = str(annot.get("/Subtype", ""))
    if subtype not in _COMMENT_SUBTYPES:
        return f"is a {subtype or 'untyped'} annotation, which paints an arbitrary appearance"
    if _flags(annot) & _HIDING_FLAGS:
        return None
    appearance = annot.get("/AP")
    if not isinstance(appearance, generic.DictionaryObject) or "/N" not in appearance:
        return None
    normal = appearance["/N"]
    streams = [normal] if isinstance(normal, generic.StreamObject) else (
        [v.get_object() for v in normal.values()] if isinstance(normal, generic.DictionaryObject) else [])
    area = _area(annot.get("/Rect"))
    for stream in streams:
        if not isinstance(stream, generic.StreamObject):
            continue
        data = stream.data[:_MAX_APPEARANCE]
        if _PAINTS.search(data):
            return "shows text or an image"
        if _FILLS.search(data) and area > _ICON_AREA and not _translucent(stream):
            return "fills an opaque area"
    return None


def _area(rect: Any) -> float:
    try:
        x1, y1, x2, y2 = (float(v) for v in rect)
    except (TypeError, ValueError):
        return float("inf")
    return abs(x2 - x1) * abs(y2 - y1)


def _translucent(stream: generic.StreamObject) -> bool:
    resources = stream.get("/Resources")
    states = resources.get("/ExtGState") if isinstance(resources, generic.DictionaryObject) else None
    if not isinstance(states, generic.DictionaryObject):
        return False
    for state in states.values():
        state_dict = state.get_object()
        if not isinstance(state_dict, generic.DictionaryObject):
            continue
        if state_dict.get("/BM") in ("/Multiply", "/Darken"):
            return True
        alpha = state_dict.get("/ca")
        if isinstance(alpha, int | float) and float(alpha) < 1:
            return True
    return False


# --- the form fields -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Field:
    ref: Any
    node: generic.DictionaryObject
    inherited_type: str | None
    widgets: list[Any]


def _fields(resolver: HistoricalResolver) -> tuple[dict[str, _Field], Any]:
    """Terminal fields by fully qualified name (ISO 32000-2 section 12.7.4.2), walked iteratively."""
    root = _catalog_of(resolver)
    acroform_raw = root.raw_get("/AcroForm") if "/AcroForm" in root else None
    acroform = acroform_raw.get_object() if acroform_raw is not None else None
    result: dict[str, _Field] = {}
    if not isinstance(acroform, generic.DictionaryObject):
        return result, acroform_raw
    fields = acroform.get("/Fields")
    if not isinstance(fields, generic.ArrayObject):
        return result, acroform_raw
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Any, str, str | None]] = [(f, "", None) for f in reversed(list(fields))]
    while stack:
        ref, prefix, field_type = stack.pop()
        key = _ref_of(ref)
        if key is not None:
            if key in seen:
                raise DamagedPdf(f"the form field tree holds object {key[0]} twice (a loop)")
            seen.add(key)
        if len(seen) > _MAX_NODES:
            raise DamagedPdf("the form field tree is larger than the analysis bounds")
        node = ref.get_object()
        if not isinstance(node, generic.DictionaryObject):
            continue
        title = node.get("/T")
        name = f"{prefix}.{title}" if prefix and title is not None else (str(title) if title is not None else prefix)
        ftype = str(node["/FT"]) if "/FT" in node else field_type
        kids = node.get("/Kids")
        kid_fields = [k for k in kids if isinstance(k.get_object(), generic.DictionaryObject)
                      and "/T" in k.get_object()] if isinstance(kids, generic.ArrayObject) else []
        if kid_fields:
            stack.extend((k, name, ftype) for k in reversed(kid_fields))
            continue
        widgets = list(kids) if isinstance(kids, generic.ArrayObject) else [ref]
        result[name or f"#{key}"] = _Field(ref, node, ftype, widgets)
    return result, acroform_raw


class _Fields:
    def __init__(self, diff: _Diff) -> None:
        self.diff = diff

    def compare(self) -> None:
        diff = self.diff
        old_fields, old_form = _fields(diff.old)
        new_fields, new_form = _fields(diff.new)
        self._acroform(old_form, new_form)
        for name in old_fields:
            if name not in new_fields:
                diff.add("form-field", f"form field '{name}' removed", "shadow_hide")
        for name, new in new_fields.items():
            old = old_fields.get(name)
            if old is not None and _same(diff, old.ref, new.ref) and all(
                    _same(diff, a, b) for a, b in zip(old.widgets, new.widgets, strict=False)) and len(
                    old.widgets) == len(new.widgets):
                if isinstance(new.ref, generic.IndirectObject):
                    diff.explained.add(new.ref.reference)
                continue
            for item in (new.ref, *new.widgets):
                diff.explain(item)
            if new.inherited_type == "/Sig":
                self._signature_field(name, old, new)
            elif old is None:
                diff.add("form-field", f"a new form field '{name}' ({new.inherited_type}) over the signed pages "
                         "(shadow attack: replace)", "shadow_replace")
            else:
                self._filled(name, old, new)

    def _acroform(self, old_form: Any, new_form: Any) -> None:
        diff = self.diff
        if isinstance(new_form, generic.IndirectObject):
            diff.explained.add(new_form.reference)
        old_dict = old_form.get_object() if old_form is not None else _EMPTY
        new_dict = new_form.get_object() if new_form is not None else _EMPTY
        if not isinstance(old_dict, generic.DictionaryObject) or not isinstance(new_dict, generic.DictionaryObject):
            return
        if "/Fields" in new_dict and isinstance(new_dict.raw_get("/Fields"), generic.IndirectObject):
            diff.explained.add(new_dict.raw_get("/Fields").reference)
        for key in sorted(set(old_dict.keys()) | set(new_dict.keys())):
            old_value = old_dict.raw_get(key) if key in old_dict else None
            new_value = new_dict.raw_get(key) if key in new_dict else None
            if key == "/Fields" or _same(diff, old_value, new_value):
                continue
            if key == "/SigFlags":
                continue  # set when a signature is added (ISO 32000-2 table 225)
            if key == "/DR":
                self._resources(old_value, new_value)
            elif key == "/DA":
                diff.add("form-field", "the form's default appearance (/DA) changed (shadow attack: replace)",
                         "shadow_replace")
            elif key == "/NeedAppearances":
                diff.add("form-field", "/NeedAppearances changed: viewers redraw every field (shadow attack: "
                         "replace)", "shadow_replace")
            else:
                diff.add("form-field", f"the form's {key} changed", "modification_not_allowed")
            if new_value is not None:
                diff.explain(new_value)

    def _resources(self, old_value: Any, new_value: Any) -> None:
        diff = self.diff
        old_dr = old_value.get_object() if old_value is not None else _EMPTY
        new_dr = new_value.get_object() if new_value is not None else _EMPTY
        old_fonts = old_dr.get("/Font") if isinstance(old_dr, generic.DictionaryObject) else None
        new_fonts = new_dr.get("/Font") if isinstance(new_dr, generic.DictionaryObject) else None
        if isinstance(old_fonts, generic.DictionaryObject):
            for name in old_fonts:
                if not isinstance(new_fonts, generic.DictionaryObject) or name not in new_fonts or not _same(
                        diff, old_fonts.raw_get(name), new_fonts.raw_get(name)):
                    diff.add("form-field", f"the form font {name} in /DR changed (shadow attack: replace)",
                             "shadow_replace")
        if new_value is not None:
            diff.explain(new_value)

    def _signature_field(self, name: str, old: _Field | None, new: _Field) -> None:
        diff = self.diff
        new_value = new.node["/V"] if "/V" in new.node else None  # noqa: SIM401 - dereferenced, .get is not
        old_value = old.node.raw_get("/V") if old is not None and "/V" in old.node else None
        if old_value is not None and not _same(diff, old_value, new.node.raw_get("/V")):
            diff.add("signature", f"the value of the signed signature field '{name}' replaced",
                     "signature_replaced")
            return
        if isinstance(new_value, generic.DictionaryObject) and new_value.get("/Type") == "/DocTimeStamp":
            diff.add("document-timestamp", f"document time-stamp in field '{name}'")
        elif new_value is not None and old_value is None:
            diff.add("signature", f"signature in {'new' if old is None else 'empty'} field '{name}'")
        elif old is None:
            diff.add("signature", f"empty signature field '{name}' added")
        else:
            toggled = _widget_toggles(old, new)
            diff.add("signature", f"signature field '{name}' changed",
                     toggled[1] if toggled else "modification_not_allowed")

    def _filled(self, name: str, old: _Field, new: _Field) -> None:  # noqa: PLR0912 - one branch per key class
        diff = self.diff
        value_changed = not _same(diff, old.node.raw_get("/V") if "/V" in old.node else None,
                                  new.node.raw_get("/V") if "/V" in new.node else None)
        findings: list[tuple[str, str]] = []
        keys = set(old.node.keys()) | set(new.node.keys())
        for widget_old, widget_new in zip(old.widgets, new.widgets, strict=False):
            widget_old_dict, widget_new_dict = widget_old.get_object(), widget_new.get_object()
            if widget_old_dict is not old.node:
                keys |= {f"widget{k}" for k in set(widget_old_dict.keys()) | set(widget_new_dict.keys())
                         if not _same(diff, widget_old_dict.raw_get(k) if k in widget_old_dict else None,
                                      widget_new_dict.raw_get(k) if k in widget_new_dict else None)}
        toggled = _widget_toggles(old, new)
        if toggled:
            findings.append(toggled)
        for key in sorted(keys):
            bare = key.removeprefix("widget")
            if (key in new.node or key in old.node) and _same(
                    diff, old.node.raw_get(key) if key in old.node else None,
                    new.node.raw_get(key) if key in new.node else None):
                continue
            if bare in ("/V", "/AS", "/F", "/P", "/Parent"):
                continue
            if bare == "/AP":
                if not value_changed:
                    findings.append((f"the appearance of field '{name}' replaced without a value change",
                                     "shadow_replace"))
                continue
            if bare in ("/DA", "/MK", "/Rect", "/Opt", "/MaxLen", "/DR"):
                findings.append((f"field '{name}': {bare} changed", "shadow_replace"))
            else:
                findings.append((f"field '{name}': {bare} changed", "modification_not_allowed"))
        for description, code in findings:
            diff.add("form-field", description + " (shadow attack)" if code.startswith("shadow") else description,
                     code)
        if value_changed:
            diff.add("form-filling", f"form field '{name}' filled in", field_name=name)
        elif not findings:
            diff.add("form-filling", f"form field '{name}' appearance updated", field_name=name)


def _widget_toggles(old: _Field, new: _Field) -> tuple[str, str] | None:
    for widget_old, widget_new in zip(old.widgets, new.widgets, strict=False):
        toggled = _flag_toggle(widget_old.get_object(), widget_new.get_object())
        if toggled:
            return f"a widget of the field {toggled[0]} (shadow attack)", toggled[1]
    return None


# --- deep comparison -----------------------------------------------------------------------------------------------


def _same(diff: _Diff, old: Any, new: Any) -> bool:
    """Whether `old` (in the old revision) and `new` (in the new one) are the same PDF value, following indirect
    references on both sides (a referenced object redefined is a difference), `_NOT_FOLLOWED` excluded."""
    budget = [_MAX_NODES]
    seen: set[tuple[tuple[int, int] | None, tuple[int, int] | None]] = set()
    return _same_at(diff, old, new, budget, seen)


def _same_at(diff: _Diff, old: Any, new: Any, budget: list[int],  # noqa: PLR0911, PLR0912 - one per PDF type
             seen: set[tuple[tuple[int, int] | None, tuple[int, int] | None]]) -> bool:
    stack: list[tuple[Any, Any]] = [(old, new)]
    while stack:
        a, b = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise DamagedPdf("an object graph larger than the analysis bounds")
        if a is None or b is None:
            if a is not b:
                return False
            continue
        ref_a, ref_b = _ref_of(a), _ref_of(b)
        if (ref_a is None) != (ref_b is None) or ref_a != ref_b:
            return False
        if ref_a is not None:
            if (ref_a, ref_b) in seen:
                continue
            seen.add((ref_a, ref_b))
            if b.reference not in diff.refs and not _touches_change(diff, b, budget):
                continue  # neither it nor anything it reaches was rewritten in this revision
            a, b = diff.old(a.reference), diff.new(b.reference)
        if isinstance(a, generic.StreamObject) or isinstance(b, generic.StreamObject):
            if not (isinstance(a, generic.StreamObject) and isinstance(b, generic.StreamObject)):
                return False
            if a.encoded_data != b.encoded_data:
                return False
        if isinstance(a, generic.DictionaryObject) or isinstance(b, generic.DictionaryObject):
            if not (isinstance(a, generic.DictionaryObject) and isinstance(b, generic.DictionaryObject)):
                return False
            keys = {k for k in set(a.keys()) | set(b.keys()) if k not in _NOT_FOLLOWED}
            for key in keys:
                if (key in a) != (key in b):
                    return False
                stack.append((a.raw_get(key), b.raw_get(key)))
            continue
        if isinstance(a, generic.ArrayObject) or isinstance(b, generic.ArrayObject):
            if not (isinstance(a, generic.ArrayObject) and isinstance(b, generic.ArrayObject)) or len(a) != len(b):
                return False
            stack.extend(zip(a, b, strict=True))
            continue
        try:
            if not _is_id(a, b):
                return False
        except NotImplementedError:
            return False
    return True


def _touches_change(diff: _Diff, start: generic.IndirectObject, budget: list[int]) -> bool:
    """Whether an object not rewritten in this revision reaches one that was (/Parent and /P not followed)."""
    key = start.reference
    if key in diff.touches:
        return diff.touches[key]
    seen: set[generic.Reference] = set()
    stack: list[Any] = [start]
    result = False
    while stack and not result:
        item = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise DamagedPdf("an object graph larger than the analysis bounds")
        if isinstance(item, generic.IndirectObject):
            ref = item.reference
            if ref in seen:
                continue
            seen.add(ref)
            if ref in diff.refs:
                result = True
                break
            cached = diff.touches.get(ref)
            if cached is not None:
                result = cached
                continue
            item = diff.new(ref)
        if isinstance(item, generic.DictionaryObject):
            stack.extend(v for k, v in item.items() if k not in _NOT_FOLLOWED)
        elif isinstance(item, generic.ArrayObject):
            stack.extend(item)
    diff.touches[key] = result
    return result
