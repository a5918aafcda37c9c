"""PII found for `study` and redacted before a sample leaves the machine."""

from forged.brain import pii

TICKET = (
    "Hi, I'm Jane (jane.doe@example.com, +1 555-123-4567). My card 4111 1111 1111 1111 was charged twice; "
    "order 1234567890123 on 2021-03-22. Our key sk-abcdefghijklmnopqrstuv leaked from 192.168.1.20."
)


def test_each_kind_is_found_once() -> None:
    assert pii.find(TICKET) == {"email": 1, "phone": 1, "card": 1, "secret": 1, "ip": 1}


def test_redacted_text_keeps_its_shape_and_loses_the_data() -> None:
    red = pii.redact(TICKET)
    leaks = ("jane.doe@example.com", "555-123-4567", "4111 1111 1111 1111", "sk-abcdef", "192.168.1.20")
    for leaked in leaks:
        assert leaked not in red
    assert "<EMAIL>" in red and "<PHONE>" in red and "<CARD_NUMBER>" in red
    # An order number that fails the Luhn check and a date are not personal data.
    assert "1234567890123" in red and "2021-03-22" in red
    assert pii.find(red) == {}


def test_rows_are_counted_per_kind() -> None:
    rows = pii.count_rows([TICKET, "no data here", "write to a@b.io or b@c.io"])
    assert rows["email"] == 2 and rows["phone"] == 1
