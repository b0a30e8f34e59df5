"""DeepLIFT rules, one family per module; importing this package registers all of them."""
from jaxlift.rules import guided, linear, logic, maxrule, product, rescale, reveal_cancel  # noqa: F401
