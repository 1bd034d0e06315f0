"""The measures stage: vectorised aggregations over the activity timeline and the profile (pure pandas).

Modules: ``expression`` (arithmetic tree), ``conditions`` (operator masks shared with segments), ``compute``.
"""
