"""Proof certificates: the format (:mod:`certify.proof.certificate`), what the searches record
into it, and the independent checker (:mod:`certify.proof.check`)."""
