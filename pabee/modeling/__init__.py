"""The models: PABEE's heads and loss on a backbone (model.py: one mixin for every backbone), the
training regimes' losses, the backbone table and loading (backbones.py), one adapter per backbone
(adapters/: how it embeds, runs layer i and feeds a head), and the saved folder with the code that
lets transformers load it. A new backbone is a row in backbones.py and a module in adapters/."""

from pabee.base.lazy import lazy_exports

ENTRY_POINTS = {"BACKBONES": "backbones", "load_model": "backbones", "load_tokenizer": "backbones",
                "backbone_of_folder": "backbones", "save_folder": "saved_folder"}  # name -> its module here
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
