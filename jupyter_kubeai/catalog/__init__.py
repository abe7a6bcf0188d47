"""The catalog: images and profiles (sizes) that admins offer, and who may use them.

- :mod:`.model`: the entries (``Image``, ``Profile``, ``ImageRule``) and their
  validation, pure data;
- :mod:`.access`: what one user may use (by hub groups), the spawn form's
  ``profile_list``, and the checked ``Selection`` of a spawn.

The SQL store that keeps them is :mod:`jupyter_kubeai.store`.
"""
