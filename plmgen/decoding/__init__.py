"""Any-order query-stream decoding: exact incremental cache, order strategies, search, refinement.

    from plmgen.decoding import decode, sequence_logprob, Hypothesis, ORDERS, get_order
"""

from .orders import ORDERS, get_order
from .search import decode, sequence_logprob
from .state import Hypothesis

__all__ = ["ORDERS", "Hypothesis", "decode", "get_order", "sequence_logprob"]
