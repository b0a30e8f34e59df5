"""DeepLIFT rules, one family per module; importing this package registers all of them."""
from jaxlift.rules import (guided, linear, logic, loops, maxrule, product, rescale,  # noqa: F401
                           reveal_cancel, composites)
