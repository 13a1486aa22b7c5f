"""Pictures of a run: MAE reconstructions, attention / similarity maps, grids written as PNG."""

from .attention_maps import attention_grid, attention_maps, similarity_map, threshold_top_mass, vit_cls_attention
from .epoch import epoch_pictures, log_epoch_pictures
from .grid import make_grid, save_png
from .mae_reconstruction import mae_reconstruct, mae_reconstruction_grid
from .samples import fixed_images

__all__ = ["attention_grid", "attention_maps", "epoch_pictures", "fixed_images", "log_epoch_pictures", "make_grid",
           "mae_reconstruct", "mae_reconstruction_grid", "save_png", "similarity_map", "threshold_top_mass",
           "vit_cls_attention"]
