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
