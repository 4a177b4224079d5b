"""Where prompts are applied: SpeechPrompt v2 on a frozen unit LM, many tasks in one forward pass.

Sequence (SpeechPrompt ``preprocessor_base.py`` + fairseq ``build_dataset_for_inference``): ``[</s>, u1+4 ..
uM+4, <s>]``; the ``<s>`` (id 0) embedding is replaced by the task's separator; the label is read at that last
position: hidden -> tied LM logits ``[V]`` -> the task's linear verbalizer ``[C+4, V]`` -> class i is output 4+i.

One label per task is the serving contract: the official sampler decodes multi-token labels greedily, feeding each
predicted verbalizer index back as an input *token id*; we treat a multi-word label (``"activate lights kitchen"``)
as one class of the task instead, which keeps every row one forward step and lets rows of different tasks share a
batch (docs/prompting.md).

Read-out: SpeechPrompt v2 reads the label at the separator (``readout="separator"``, every official package). A
package may instead say ``readout="mean"``: the hidden state fed to the LM logits is the mean of the final hidden
states over the row's ``M+2`` positions (``</s>``, the units, the separator), so a short word far before the separator
weighs as much as the units next to it (docs/prompting.md; measured in docs/results.md). It is this project's
extension, not the paper's; the tensors, the verbalizer and the batch are the same, and rows of both kinds share one
forward.

Unit view: a package may name the clusters view of a product codebook (``unit_views.py``): that task's rows fold each
unit's pitch register away (and dedup again) before their tokens are built; other rows of the batch are unchanged.

Deep prompts: official code overwrites the first ``l`` key/value inputs of every layer with ``P_K^i``/``P_V^i``; since
those positions are replaced at every layer, the real tokens only see ``k_proj(P_K^i)``/``v_proj(P_V^i)``, constant
per task. ``PromptBank`` computes them once when a task is added and keeps them in preallocated device slots;
a batch gathers them by slot (one ``index_select`` per tensor). The input prompt is inert under deep prompts
(gslm_reference.md section 5) and is therefore stored but not used.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from .choices import READOUTS
from .package import NUM_SPECIAL, PromptSet, TaskPackage
from .unit_lm import PAD_IDX, PrefixKV, UnitLM
from .unit_views import UnitView

BOS, EOS = 0, 2  # <s> is the separator slot; </s> starts every sequence


def make_rows(units: list[Tensor], device: torch.device | str | None = None,
              unit_to_token: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Units ``[M_b]`` (ids 0..K-1, K = ``Backbone.num_units``: a voice prefix's ids included) -> tokens ``[B, T]`` right-padded with pad=1, and last index ``[B]``.

    Row b is ``[</s>, tok(u1), ..., tok(uM), <s>]`` so ``T_b = M_b + 2``; ``tok`` is the dictionary's mapping
    ``unit_to_token [K]`` (default: natural order, unit i at index 4+i).
    """
    lens = [int(u.numel()) + 2 for u in units]
    tokens = torch.full((len(units), max(lens)), PAD_IDX, dtype=torch.long)
    for b, u in enumerate(units):
        tokens[b, 0] = EOS
        u = u.to(torch.long).cpu()
        tokens[b, 1:lens[b] - 1] = unit_to_token[u] if unit_to_token is not None else u + NUM_SPECIAL
        tokens[b, lens[b] - 1] = BOS
    last = torch.tensor(lens, dtype=torch.long) - 1
    return tokens.to(device), last.to(device)


def read_out(hidden: Tensor, tokens: Tensor, last_index: Tensor, mean_rows: Tensor | None = None) -> Tensor:
    """The hidden state each row's label is read from: ``[B, T, d]`` -> ``[B, d]``.

    Row b takes its separator's state ``hidden[b, last_index[b]]``, or, where ``mean_rows [B]`` (bool) is true, the
    mean of its states over the non-pad positions ``0..last_index[b]`` (``readout="mean"``; pad id 1 is excluded).
    """
    h = hidden[torch.arange(tokens.shape[0], device=tokens.device), last_index]  # [B, d]
    if mean_rows is None or not bool(mean_rows.any()):
        return h
    keep = tokens.ne(PAD_IDX).unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    mean = (hidden * keep).sum(1) / keep.sum(1)
    return torch.where(mean_rows.unsqueeze(-1), mean, h)


def prompted_class_logits(lm: UnitLM, tokens: Tensor, last_index: Tensor, deep_key: Tensor | None,
                          deep_value: Tensor | None, separator: Tensor, verbalizer: Tensor,
                          reference: bool = False, readout: str = "separator") -> Tensor:
    """Differentiable prompted forward (training and reference use).

    tokens ``[B, T]``, last_index ``[B]``, deep_key/deep_value ``[B, L, l, d]`` (or None for no deep prompts),
    separator ``[B, d]``, verbalizer ``[B, C+4, V]`` -> verbalizer outputs ``[B, C+4]`` read at the separator
    (``readout="separator"``) or from the mean state of each row (``"mean"``, :func:`read_out`). Raises
    ``ValueError`` for another read-out.
    """
    if readout not in READOUTS:
        raise ValueError(f"readout {readout!r}; accepted: {', '.join(READOUTS)}")
    prefix = None
    if deep_key is not None and deep_key.shape[-2] > 0:
        pk, pv = lm.project_prefix(deep_key, deep_value)
        prefix = PrefixKV(pk, pv)
    hidden = lm(tokens, prefix, separator, reference=reference)
    mean_rows = torch.full((tokens.shape[0],), readout == "mean", dtype=torch.bool, device=tokens.device)
    h = read_out(hidden, tokens, last_index, mean_rows)
    return torch.einsum("bcv,bv->bc", verbalizer, lm.logits(h))


class PromptBank:
    """Device-resident task slots for one unit LM: prefix K/V, separator and verbalizer per task.

    Slot tensors (S slots, grown by doubling): ``pk``/``pv [S, L, H, l_max, hd]``, ``pmask [S, l_max]``,
    ``sep [S, d]``, ``verb [S, C_max+4, V]``, ``ncls [S]``, ``mean [S]`` (bool: the task's read-out is the mean).
    Freed slots are reused, and a remove shrinks the tensors (fewer slots, shorter ``l_max``, smaller ``C_max``) to what the remaining tasks need, so the memory of
    a deleted or evicted task returns. Thread-safe: adds and removes may come from a loader thread while the
    model thread classifies. An ensemble package (K members, ``ensembles.py``) takes K slots; each of its rows is
    scored once per member in the same forward and answered with the mean of the members' probabilities.
    """

    def __init__(self, lm: UnitLM, capacity: int = 8, unit_to_token: Tensor | None = None):
        self.lm = lm
        self.unit_to_token = unit_to_token
        p = next(lm.parameters())
        self.device, self.dtype = p.device, p.dtype
        cfg = lm.cfg
        self._dims = (cfg.layers, cfg.heads, cfg.embed_dim // cfg.heads, cfg.embed_dim, cfg.vocab_size)
        self._lock = threading.RLock()  # classify holds it across the views' read and gather
        self.slots: dict[str, int] = {}
        self._nbytes: dict[str, int] = {}
        self._sizes: dict[str, tuple[int, int]] = {}  # key -> (prompt length, classes)
        self._views: dict[str, UnitView] = {}  # key -> the unit view its rows are folded with (unit_views.py)
        self._members: dict[str, tuple[str, ...]] = {}  # task key -> its members' slot keys (member 0: the key)
        self._min_capacity = max(1, capacity)
        self._alloc(capacity, 0, 1)

    def _alloc(self, cap: int, lmax: int, cmax: int, moves: dict[int, int] | None = None) -> None:
        """(Re)allocate the slot tensors; old slot ``i`` is copied to ``moves[i]`` (default: every slot in place)."""
        L, H, hd, d, V = self._dims
        kw = dict(device=self.device, dtype=self.dtype)
        new = dict(pk=torch.zeros(cap, L, H, lmax, hd, **kw), pv=torch.zeros(cap, L, H, lmax, hd, **kw),
                   pmask=torch.zeros(cap, lmax, dtype=torch.bool, device=self.device),
                   sep=torch.zeros(cap, d, **kw), verb=torch.zeros(cap, cmax + NUM_SPECIAL, V, **kw),
                   ncls=torch.zeros(cap, dtype=torch.long, device=self.device),
                   mean=torch.zeros(cap, dtype=torch.bool, device=self.device))
        if hasattr(self, "pk"):  # copy the old slots into the new tensors
            if moves is None:
                moves = {i: i for i in range(self.pk.shape[0])}
            if moves:
                src = torch.tensor(list(moves), device=self.device)
                dst = torch.tensor(list(moves.values()), device=self.device)
                ol, oc = min(self.pk.shape[3], lmax), min(self.verb.shape[1], cmax + NUM_SPECIAL)
                new["pk"][dst, :, :, :ol] = self.pk[src, :, :, :ol]
                new["pv"][dst, :, :, :ol] = self.pv[src, :, :, :ol]
                new["pmask"][dst, :ol] = self.pmask[src, :ol]
                new["sep"][dst] = self.sep[src]
                new["verb"][dst, :oc] = self.verb[src, :oc]
                new["ncls"][dst] = self.ncls[src]
                new["mean"][dst] = self.mean[src]
        for k, v in new.items():
            setattr(self, k, v)

    def allocated_bytes(self) -> int:
        """Device bytes of all slot tensors (what the bank holds, used or not)."""
        return sum(t.numel() * t.element_size() for t in (self.pk, self.pv, self.pmask, self.sep, self.verb,
                                                          self.ncls, self.mean))

    def _shrink(self) -> None:
        """Re-pack the remaining tasks into tensors just large enough for them (callers hold ``_lock``)."""
        lmax = max((p for p, _ in self._sizes.values()), default=0)
        cmax = max((c for _, c in self._sizes.values()), default=1)
        cap = self._min_capacity
        while cap < len(self.slots):
            cap *= 2
        if (cap, lmax, cmax + NUM_SPECIAL) == (self.pk.shape[0], self.pk.shape[3], self.verb.shape[1]):
            return
        moves = {slot: i for i, slot in enumerate(sorted(self.slots.values()))}
        self._alloc(cap, lmax, cmax, moves)
        self.slots = {key: moves[slot] for key, slot in self.slots.items()}

    def __contains__(self, key: str) -> bool:
        return key in self._members

    def __len__(self) -> int:
        return len(self._members)

    def nbytes(self, key: str) -> int:
        """Device bytes the task's slots occupy (every member's prefix K/V, separator and verbalizer)."""
        return sum(self._nbytes[k] for k in self._members[key])

    def add(self, key: str, pkg: TaskPackage) -> None:
        """Project each member's deep prompts once and store them in slots (replacing ``key`` if present)."""
        keys = tuple(key if m == 0 else f"{key}\x00member{m}" for m in range(len(pkg.members)))
        with self._lock:  # a classify sees all of a task's members or none of the new ones
            old = self._members.get(key, ())
            try:
                for k, member, view in zip(keys, pkg.members, pkg.meta.views, strict=True):
                    self._add_slot(k, member, pkg, view)
            except BaseException:  # no slot of a half-added ensemble outlives the failure: a key being replaced
                for k in {*keys, *old}:  # loses its old slots too (some may hold new members: never a mix)
                    self._drop_slot(k)
                self._members.pop(key, None)
                self._shrink()
                raise
            stale = [k for k in old if k not in keys]
            self._members[key] = keys
            for k in stale:
                self._drop_slot(k)
            if stale:
                self._shrink()

    def _add_slot(self, key: str, member: PromptSet, pkg: TaskPackage, view: UnitView | None) -> None:
        plen, c = pkg.meta.prompt_length, pkg.num_classes
        with torch.no_grad():
            pk, pv = self.lm.project_prefix(member.deep_key.to(self.device, self.dtype),
                                            member.deep_value.to(self.device, self.dtype))  # [L, H, l, hd]
        with self._lock:
            used = set(self.slots.values())
            slot = self.slots.get(key)
            if slot is None:
                slot = next((i for i in range(self.pk.shape[0]) if i not in used), self.pk.shape[0])
            cap = self.pk.shape[0] * (2 if slot >= self.pk.shape[0] else 1)
            if cap != self.pk.shape[0] or plen > self.pk.shape[3] or c + NUM_SPECIAL > self.verb.shape[1]:
                self._alloc(cap, max(plen, self.pk.shape[3]), max(c, self.verb.shape[1] - NUM_SPECIAL))
            self.pk[slot].zero_()
            self.pv[slot].zero_()
            self.pk[slot, :, :, :plen] = pk
            self.pv[slot, :, :, :plen] = pv
            self.pmask[slot] = False
            self.pmask[slot, :plen] = True
            self.sep[slot] = member.separator.to(self.device, self.dtype)
            self.verb[slot].zero_()
            self.verb[slot, :c + NUM_SPECIAL] = member.verbalizer.to(self.device, self.dtype)
            self.ncls[slot] = c
            self.mean[slot] = pkg.meta.readout == "mean"
            self.slots[key] = slot
            self._sizes[key] = (plen, c)
            if view is not None:
                self._views[key] = view
            else:
                self._views.pop(key, None)
            self._nbytes[key] = (pk.numel() + pv.numel() + member.separator.numel() + member.verbalizer.numel()) \
                * pk.element_size()

    def _drop_slot(self, key: str) -> None:
        self.slots.pop(key, None)
        self._nbytes.pop(key, None)
        self._sizes.pop(key, None)
        self._views.pop(key, None)

    def remove(self, key: str) -> None:
        """Free the task's slots (no-op if absent) and shrink the tensors to what the other tasks need."""
        with self._lock:
            for k in self._members.pop(key, ()):
                self._drop_slot(k)
            self._shrink()

    def rows_of(self, key: str) -> int:
        """Unit-LM rows one request row of ``key`` costs: its member count (1 for a plain or unknown key)."""
        with self._lock:
            return len(self._members.get(key, (key,)))

    def member_rows(self, keys: list[str]) -> tuple[list[str], list[int]]:
        """Task keys -> the slot key of every member row (a task's members in order) and the members per task; an
        unknown key stays itself (``gather`` names it). Callers hold ``_lock``."""
        groups = [self._members.get(k, (k,)) for k in keys]
        return [s for g in groups for s in g], [len(g) for g in groups]

    @staticmethod
    def mean_of_members(probs: list[Tensor], counts: list[int]) -> list[Tensor]:
        """Per member row probabilities -> per task row: the mean over the task's members (a plain task: itself)."""
        out, i = [], 0
        for n in counts:
            out.append(probs[i] if n == 1 else torch.stack(probs[i:i + n]).mean(0))
            i += n
        return out

    def gather(self, keys: list[str]) -> tuple[PrefixKV | None, Tensor, Tensor, Tensor, Tensor]:
        """Rows' slots (a plain task's key, or ``member_rows``' slot keys) -> (prefix K/V, separators ``[B, d]``,
        verbalizers ``[B, C_max+4, V]``, ncls ``[B]``, mean read-out ``[B]`` bool).

        Raises ``KeyError`` naming an unknown key.
        """
        with self._lock:
            missing = [k for k in keys if k not in self.slots]
            if missing:
                raise KeyError(f"tasks not resident in the prompt bank: {missing}")
            idx = torch.tensor([self.slots[k] for k in keys], device=self.device)
            lmax = int(self.pmask[idx].sum(1).max()) if self.pmask.shape[1] else 0
            prefix = None
            if lmax:
                prefix = PrefixKV(self.pk[idx, :, :, :lmax], self.pv[idx, :, :, :lmax], self.pmask[idx, :lmax])
            return prefix, self.sep[idx], self.verb[idx], self.ncls[idx], self.mean[idx]

    @torch.no_grad()
    def classify(self, units: list[Tensor], keys: list[str]) -> list[Tensor]:
        """One LM forward for rows of (possibly) different tasks -> per-row class probabilities ``[C_row]``.

        Scores are the softmax over the row's C class outputs (verbalizer outputs 4..4+C-1); an ensemble task's row
        is scored once per member (rows of the same forward) and answers their mean. A row whose task (or member:
        ``member_unit_views``) names a unit view is folded first (``unit_views.UnitView.apply``; once per clip and
        view, shared by the members that read it). Raises ``unit_lm.SequenceTooLong`` before any forward when a row
        exceeds the LM's positions.
        """
        if not units:
            return []
        with self._lock:  # one task state for the fold and the prompts, even if a key is re-added meanwhile
            slots, counts = self.member_rows(keys)
            views = [self._views.get(k) for k in slots]
            rows, i = [], 0
            for u, n in zip(units, counts, strict=True):  # a row per member, each view's fold made once per clip
                folded = {v: u if v is None else v.apply(u) for v in set(views[i:i + n])}
                rows += [folded[v] for v in views[i:i + n]]
                i += n
            units = rows
            self.lm.check_length(max(int(u.numel()) for u in units) + 2)  # up front: SequenceTooLong, not a crash
            tokens, last = make_rows(units, self.device, self.unit_to_token)
            prefix, sep, verb, ncls, mean_rows = self.gather(slots)
        hidden = self.lm(tokens, prefix, sep)
        h = read_out(hidden, tokens, last, mean_rows)
        out = torch.einsum("bcv,bv->bc", verb, self.lm.logits(h))  # [B, C_max+4]
        probs = [out[b, NUM_SPECIAL:NUM_SPECIAL + int(ncls[b])].float().softmax(-1).cpu() for b in range(len(units))]
        return self.mean_of_members(probs, counts)
