"""Arithmetic as text: the safe parser, LaTeX rewriting, finding a CoT's expressions, answers and grading.

Nothing here passes text to eval, exec or sympify; every evaluation runs in ``core.sandbox``.
"""
