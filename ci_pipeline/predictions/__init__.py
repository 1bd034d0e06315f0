"""Predictions: transactional churn, customer lifetime value and product recommendation on the activity timeline.

Pure pandas / numpy / scikit-learn; nothing here imports dagster. See docs/predictions.md.
"""
