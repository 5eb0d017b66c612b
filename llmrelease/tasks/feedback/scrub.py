"""Personal data out of harvested text, with Presidio's pattern recognizers (no model, no network).

Users paste e-mail addresses, phone numbers and card numbers into support requests and feedback;
none of that may reach an evalset in Git or a fine-tuning set. Presidio's recognizers for these are
regular expressions with checksums (Luhn for cards, mod-97 for IBANs, libphonenumber for phones),
so they run offline and give the same answer every time, which the byte-for-byte rebuild of a
snapshot needs. Names and addresses need a language model, which nothing here downloads: the
README says so.

tldextract, which the e-mail recognizer calls, fetches the public suffix list from the internet on
first use; it is pointed at the snapshot it ships instead.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["ENTITIES", "scrub", "scrub_value"]

ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN")
"""What is replaced, each by ``<ENTITY>``."""

_MIN_SCORE = 0.3
"""Presidio scores a phone number 0.4 without context words; below 0.3 are weak guesses."""


@functools.cache
def _engines() -> tuple[list[Any], Any]:
    import tldextract.tldextract as tx

    tx.TLD_EXTRACTOR.suffix_list_urls = ()  # the bundled snapshot, never a download
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )
    from presidio_anonymizer import AnonymizerEngine

    regions = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "CA", "AU", "BR", "IL")
    recognizers = [
        EmailRecognizer(),
        PhoneRecognizer(supported_regions=regions),
        CreditCardRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
        UsSsnRecognizer(),
    ]
    return recognizers, AnonymizerEngine()


def scrub(text: str) -> str:
    """``text`` with every recognised entity replaced by its type, e.g. ``<EMAIL_ADDRESS>``."""
    if not text or not any(ch.isdigit() or ch in "@:" for ch in text):
        return text  # every entity above has a digit, an '@' or a ':'
    recognizers, anonymizer = _engines()
    found = []
    for rec in recognizers:
        found += [r for r in rec.analyze(text, entities=rec.supported_entities, nlp_artifacts=None)
                  if r.score >= _MIN_SCORE]  # fmt: skip
    if not found:
        return text
    return anonymizer.anonymize(text=text, analyzer_results=found).text


def scrub_value(value: Any) -> Any:
    """Every string inside ``value`` (a string, a list or a JSON object) scrubbed; keys are kept."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [scrub_value(v) for v in value]
    if isinstance(value, dict):
        return {k: scrub_value(v) for k, v in value.items()}
    return value
