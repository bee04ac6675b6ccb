"""Accuracy predictors: registered kinds over registered feature encoders."""
