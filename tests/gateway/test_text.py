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
