"""MLflow: the only package that imports mlflow. ``client`` logs searches, nested point runs and
artifacts; ``names`` turns specs and points into MLflow keys; ``view`` builds the saved Pareto chart
view; ``plots`` draws the front (PNG, HTML)."""
