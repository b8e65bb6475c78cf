"""Evaluation: prompt adherence of a model, measured with the ShapeWorld scorer."""
