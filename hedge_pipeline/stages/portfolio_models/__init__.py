"""Stages 6-8: meta-controller, joint model and ensemble, with the promotion gate.

"Portfolio" here means the book of all weekly codes hedged together; the option selection is
the ``selection`` stage.
"""
