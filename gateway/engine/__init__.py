"""The trigger engine: one stored event in, timeline entries and stage moves out.

Split by responsibility: ``leads`` finds (or creates) the items an event is about,
``timeline`` records the event on them, ``overdue`` arms and judges ``response.overdue``,
``moves`` applies the triggers' stage moves, and ``processor`` runs them in order. Every
effect is idempotent (keyed by the event's identity), so an event processed twice after a
crash or a claim changes nothing the second time.
"""
