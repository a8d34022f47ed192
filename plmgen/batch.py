"""The batch contract between the data pipelines and the objectives, as a typed dict.

Legend: B rows, T sequence length. Masks are bool, True = yes. Tensors are batch-first and stay on the batch's
device; the ``*_max`` and ``reuse_len``/``batch_index`` entries are host ints, so an objective can size its tensors
without reading the device.

Two producers fill it:
* pre-training (``plmgen.data.pretrain.PretrainBatches.batch``): rows ``[reuse (R) | A <sep> B <sep> <cls>]`` of
  parallel text streams, always exactly T tokens (``valid`` all True);
* parallel data (``plmgen.data.parallel.pair_batch``): right-padded ``[source <sep> target]`` rows.
Objectives read only the keys they need; ``seq2seq.with_end_marker`` adds ``end``.
"""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor


class Batch(TypedDict, total=False):
    """One training or evaluation batch (keys present depend on the producer; see the module docstring)."""

    # every batch
    input_ids: Tensor  # [B, T] long
    seg_ids: Tensor  # [B, T] long: 0 reuse/A/source/<sep>/padding, 1 B/target, 2 <cls>
    valid: Tensor  # [B, T] bool: a real token (not padding)
    functional: Tensor  # [B, T] bool: <sep>, <cls>, padding — never predicted, never a source token
    batch_index: int  # k: the batch is a pure function of (seed, rank, k); resume continues at k + 1
    # pre-training streams
    reuse_len: int  # R: the first R positions are cached as Transformer-XL memory for the next batch
    stream_id: Tensor  # [B] long: which text stream each row continues
    stream_reset: Tensor  # [B] bool: the stream wrapped to its start, so the trainer drops that row's memory
    is_next: Tensor  # [B] long: 1 when B is A's true continuation (next-sentence prediction)
    cls_pos: Tensor  # [B] long: position of <cls>
    bi_backward: bool  # bi_data: the second half of the rows are the first half's streams reversed
    # parallel pairs
    target: Tensor  # [B, T] bool: target positions
    src_len: Tensor  # [B] long: source length S, without <sep>
    positions: Tensor  # [B, T] long: each token's position when not 0..T−1 (seq2seq.aligned_positions)
    tgt_len: Tensor  # [B] long: target length L
    src_len_max: int  # max over rows of src_len
    tgt_len_max: int  # max over rows of tgt_len
    end: Tensor  # [B, T] bool: the end-marker slot after each target (seq2seq.with_end_marker)
