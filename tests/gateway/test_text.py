import time

from hypothesis import given, settings, strategies as st

from gateway.tts.text import SentenceBuffer, split_sentences


def test_split_sentences_keeps_punctuation_and_decimals():
    text = "Hello there! Your balance is 3.50 dollars. Is that right?\nThanks"
    assert split_sentences(text) == ["Hello there!", "Your balance is 3.50 dollars.",
                                     "Is that right?", "Thanks"]


def test_sentence_buffer_releases_whole_sentences_only():
    buf = SentenceBuffer()
    released = []
    for token in ["Hel", "lo the", "re. How", " are", " you?", " I am", " fine"]:
        released += buf.push(token)
    assert released == ["Hello there.", "How are you?"]
    assert buf.flush() == "I am fine"
    assert buf.flush() is None


def test_pack_sentences_fills_pieces_up_to_the_limit():
    from gateway.tts.text import pack_sentences

    text = "One two. Three four five. " + "x" * 25 + " tail words here."
    pieces = pack_sentences(text, 20)
    # sentences are kept whole where they fit; a long one is cut hard, then at a space
    assert pieces == ["One two.", "Three four five.", "x" * 20, "xxxxx tail words", "here."]
    assert pack_sentences("Hi. There.", 20) == ["Hi. There."]


# ---- streamed text is scanned once (issue 12, finding 2) ---------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab .!?\"')]\n", max_size=60), st.lists(st.integers(0, 60), max_size=8))
def test_streamed_pieces_give_the_sentences_of_the_whole_text(text, cuts):
    """However the text is cut into pieces (a boundary split between two, closing quotes
    arriving alone), the sentences are those of the whole text."""
    cuts = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
    buf = SentenceBuffer()
    released = [s for piece in pieces for s in buf.push(piece)]
    rest = buf.flush()
    assert released + ([rest] if rest else []) == split_sentences(text)


def test_sentence_buffer_work_is_linear_in_the_text_streamed():
    """300 pieces of 20,000 characters without a sentence end (the attack of issue 12): each
    character is searched a bounded number of times, however long the sentence grows; the
    old buffer searched the whole pending text again for every piece (quadratic)."""
    piece = "lorem ipsum dolor sit amet " * 740  # 19,980 characters, no sentence end
    timings = {}
    for count in (75, 300):
        buf = SentenceBuffer()
        started = time.perf_counter()
        for _ in range(count):
            assert buf.push(piece) == []
        timings[count] = time.perf_counter() - started
        assert buf.scanned <= 2 * count * len(piece) + 2 * count
        assert buf.flush() == (piece * count).strip()
    print(f"\nSentenceBuffer: 75 pieces {timings[75] * 1000:.1f} ms, 300 pieces "
          f"{timings[300] * 1000:.1f} ms (ratio {timings[300] / timings[75]:.1f} for 4x the "
          "text; quadratic would be about 16)")


def test_a_long_run_of_closing_quotes_is_not_searched_again_for_each_piece():
    buf = SentenceBuffer()
    buf.push("He said stop.")
    for _ in range(2000):
        assert buf.push('"') == []
    assert buf.push(" Then he left.\n") == ["He said stop.", "Then he left."]
    assert buf.scanned < 2 * (13 + 2000 + 15) + 10
