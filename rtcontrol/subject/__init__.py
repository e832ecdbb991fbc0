"""rtcontrol.subject: the subject agent on the presentation PC and the clients that talk to it.

``FeedbackClient`` is the synchronous client a PsychoPy (or any Python) stimulus script uses.
"""

from rtcontrol.subject.client import FeedbackClient, FeedbackValue

__all__ = ["FeedbackClient", "FeedbackValue"]
