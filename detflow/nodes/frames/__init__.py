"""Frame nodes: transformations of blocks of frames inside the partition task.

The contract is :class:`~detflow.nodes.frames.base.FrameNode`; built-ins, one module
per family, are registered in :data:`detflow.registry.FRAMES`:

* ``correct`` (:mod:`.correct`): dark, gain, excluded pixels;
* ``crop``, ``bin``, ``flip``, ``rotate90``, ``transpose`` (:mod:`.geometry`);
* ``threshold``, ``cast`` (:mod:`.levels`);
* user functions by import path (:mod:`.function`).
"""

from __future__ import annotations

from detflow.nodes.frames.base import FrameNode, frame_node_class, is_sparse

__all__ = ["FrameNode", "frame_node_class", "is_sparse"]
