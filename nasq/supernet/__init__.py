"""Weight-sharing supernet: elastic layers with fake quantization, training and evaluation.

Imports torch and numpy only, so it runs on a GPU machine that lacks ray, mlflow and pymoo.
"""
