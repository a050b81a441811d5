"""Scoring search terms against the shipped phrase lists, with what children really type."""

from pathlib import Path

import pytest

from schoolproxy.monitoring.phrases import PhraseError, load_phrase_lists, parse_list, tokens

ROOT = Path(__file__).resolve().parent.parent / "filterlists" / "phrases"


@pytest.fixture(scope="module")
def lists():
    return load_phrase_lists(ROOT)


def top(lists, text):
    scores = lists.score(text)
    return (scores[0].theme, scores[0].score) if scores else (None, 0)


@pytest.mark.parametrize("text,theme", [
    ("how to kill myself", "self-harm"), ("how to k1ll myself", "self-harm"), ("HOW TO KILL MYSELF!!!", "self-harm"),
    ("k.i.l.l m.y.s.e.l.f", "self-harm"), ("k i l l myself", "self-harm"), ("i want to diiiie", "self-harm"),
    ("sucide methods", "self-harm"), ("su1c1de note", "self-harm"), ("kíll mysélf", "self-harm"),
    ("zabić się", "self-harm"), ("zabic sie", "self-harm"), ("vreau să mor", "self-harm"),
    ("khudkushi kaise kare", "self-harm"), ("خودکشی کیسے", "self-harm"), ("ਮਰਨਾ ਚਾਹੁੰਦਾ", "self-harm"),
    ("send me nudes", "grooming"), ("my boyfriend wants pics", "grooming"), ("nie mów rodzicom", "grooming"),
    ("how to join isis", "extremism"), ("how to make a bomb", "extremism"), ("where to buy drugs", "drugs"),
    ("everyone hates me", "bullying"), ("free porn", "pornography"), ("hitler was right", "hate"),
    ("bring a knife to school", "weapons"),
])
def test_concerning_searches_reach_the_pupil_threshold(lists, text, theme):
    got, score = top(lists, text)
    assert got == theme and score >= 60


@pytest.mark.parametrize("text", [
    "how to kill a process in linux", "sex education year 6", "Scunthorpe United fixtures", "bath bomb recipe",
    "suicide squad trailer", "history of the holocaust homework", "photo shoot ideas", "cut the rope game",
    "dying hair purple", "middlesex university", "to kill a mockingbird summary", "killer whale facts",
    "skill builder maths", "essex weather", "knife and fork drawing", "putting myself first", "nerf gun",
    "suicide prevention helpline", "anti bullying week", "talk to frank drugs", "how many legs does a spider have",
])
def test_benign_look_alikes_do_not(lists, text):
    assert top(lists, text)[1] < 60, lists.score(text)


def test_an_exception_covers_only_its_own_words(lists):
    assert top(lists, "kill a process and kill myself") == ("self-harm", 100)


def test_duplicate_spellings_count_once(lists):
    assert top(lists, "zabić się")[1] == 100


def test_normalisation():
    assert tokens("K1LL  my-self") == ["kil", "myself"]
    assert tokens("s-u-i-c-i-d-e") == ["suicide"]
    assert tokens("year 7 maths") == ["year", "7", "maths"]


def test_e2guardian_lists_import_unchanged(tmp_path):
    other = tmp_path / "more.txt"
    other.write_text("< extra phrase ><70>\n")
    f = tmp_path / "weightedphraselist"
    f.write_text('#listcategory: "Test"\n< one two ><50>\n<three>,<four><20>\n< benign ><-10>\n.Include<more.txt>\n')
    tl = parse_list(f, "t")
    assert tl.label == "Test" and [e.weight for e in tl.entries] == [50, 20, -10, 70]
    f.write_text("< broken <50>\n")
    with pytest.raises(PhraseError, match="weightedphraselist:1"):
        parse_list(f, "t")


def test_enormous_or_binary_input_is_bounded(lists):
    lists.score("\x00\xff" * 100_000)
    lists.score("kill " * 100_000)
    assert top(lists, "a" * 1_000_000)[1] == 0


def test_gurmukhi_words_are_not_broken_at_vowel_signs(lists):
    assert tokens("ਮੈਂ ਮਰਨਾ ਚਾਹੁੰਦਾ ਹਾਂ") == ["ਮੈਂ", "ਮਰਨਾ", "ਚਾਹੁੰਦਾ", "ਹਾਂ"]
    assert top(lists, "ਮੈਂ ਮਰਨਾ ਚਾਹੁੰਦਾ ਹਾਂ")[0] == "self-harm"


# -- normalisation, one behaviour each ----------------------------------------------------------------
@pytest.mark.parametrize("typed,normal", [
    ("KILL", ["kil"]),                       # case, repeated letters
    ("kíll mysélf", ["kil", "myself"]),      # accents
    ("k1ll $uicide", ["kil", "suicide"]),    # leetspeak inside words
    ("year 7", ["year", "7"]),               # a number alone is not leetspeak
    ("k i l l", ["kil"]),                    # spaced letters
    ("s.u.i.c.i.d.e", ["suicide"]),          # punctuated letters
    ("self-harm", ["selfharm"]),             # intra-word punctuation joined (split variant scored too)
    ("diiiie", ["die"]),                     # repeated letters
    ("myself!!!", ["myself"]),               # edge punctuation is not leetspeak
    ("zabić się", ["zabic", "sie"]),         # Polish diacritics
    ("Łódź", ["lodz"]),                      # Polish ł
    ("اِنْتِحَار", ["انتحار"]),                   # Arabic vowel marks
    ("আত্মহত্যা", ["আত্মহত্যা"]),               # Bengali vowel signs are part of the word
    ("i want 🪦", ["i", "want", "🪦"]),         # an emoji is a word of its own
    ("wat r u", ["what", "are", "you"]),     # chat spellings of everyday words
    ("s u i c i d e", ["suicide"]),          # ... but a letter of a spaced word stays a letter
])
def test_normalisation_each_step(typed, normal):
    assert tokens(typed) == normal


def test_misspelling_keeps_the_typed_word_as_evidence(lists):
    [s] = [s for s in lists.score("suicde methods") if s.theme == "self-harm"]
    assert s.score >= 60 and "suicde" in s.matched and "suicide" not in " ".join(s.matched)


def test_first_letter_must_agree_and_exception_words_are_never_corrected(lists):
    assert top(lists, "putting myself first")[1] < 60
    assert top(lists, "setting up a new ipad")[1] < 60


def test_words_run_together(lists):
    assert top(lists, "killmyself")[0] == "self-harm"


def test_evidence_is_the_span_as_typed_with_its_own_case_and_spelling(lists):
    [s] = lists.score("pls HOW 2 K1LL MYSELF??")
    assert s.matched == ("HOW 2 K1LL MYSELF",)


@pytest.mark.parametrize("lang,text,theme", [
    ("pl", "jak się zabić", "self-harm"), ("pl", "gdzie kupić zioło", "drugs"),
    ("ur", "خودکشی کیسے کریں", "self-harm"), ("ur", "ghar walon ko mat batana", "grooming"),
    ("pa", "ਮੈਂ ਮਰਨਾ ਚਾਹੁੰਦਾ ਹਾਂ", "self-harm"), ("pa", "chitta kithon milda", "drugs"),
    ("ro", "vreau sa mor", "self-harm"), ("ro", "trimite-mi nuduri", "grooming"),
    ("bn", "আমি মরতে চাই", "self-harm"), ("bn", "ganja kothay pabo", "drugs"),
    ("ar", "كيف انتحر", "self-harm"), ("ar", "كيف اصنع قنبلة", "extremism"),
    ("pt", "quero me matar", "self-harm"), ("pt", "me manda nudes", "grooming"),
    ("es", "cómo suicidarme", "self-harm"), ("es", "no se lo digas a tus padres", "grooming"),
    ("so", "waxaan rabaa inaan dhinto", "self-harm"), ("so", "ku biir al shabaab", "extremism"),
    ("gu", "આત્મહત્યા કેવી રીતે", "self-harm"), ("gu", "mummy papa ne na kaheto", "grooming"),
    ("lt", "kaip nusizudyti", "self-harm"), ("lt", "nesakyk tėvams", "grooming"),
    ("ta", "தற்கொலை செய்வது எப்படி", "self-harm"), ("ta", "ganja enga kidaikkum", "drugs"),
])
def test_each_language(lists, lang, text, theme):
    got, score = top(lists, text)
    assert (got, score >= 60) == (theme, True), (lang, lists.score(text))


@pytest.mark.parametrize("theme", ["self-harm", "grooming", "extremism", "bullying", "pornography", "drugs", "weapons",
                                   "hate", "violence", "circumvention", "eating-disorders"])
def test_every_theme_has_a_list_in_every_language(theme):
    langs = {f.stem for f in (ROOT / theme).glob("*.txt")}
    assert {"en", "pl", "ur", "pa", "ro", "bn", "ar", "pt", "es", "so", "gu", "lt", "ta"} <= langs


def test_no_term_set_is_defined_in_two_themes():
    # Term sets are global: a name defined again extends the set. Two themes using one name for two ideas
    # ("@household": cough syrup and nutmeg for drugs, "me, my mum" for violence) would each match the
    # other's words. sets.txt is the place for a set shared on purpose.
    where: dict[str, set[str]] = {}
    for f in ROOT.glob("*/*.txt"):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.startswith("@") and "=" in line:
                where.setdefault(line.split("=")[0].strip(), set()).add(f.parent.name)
    assert {name: themes for name, themes in where.items() if len(themes) > 1} == {}


def test_content_path_finds_phrases_in_page_text_and_the_words_as_written(lists):
    page = "Intro. " + "Volcanoes are mountains. " * 2000 + "Here is HOW TO KILL YOURSELF, step one. " + "End. " * 100
    scores = lists.score_content(page, evidence_at=60)
    [s] = [s for s in scores if s.theme == "self-harm"]
    assert s.score >= 100 and "HOW TO KILL YOURSELF" in s.matched


def test_content_path_keeps_exceptions_and_boundaries(lists):
    assert not [s for s in lists.score_content("Scunthorpe skill kill a process killer whale " * 50) if s.score >= 60]


# -- page text: accents kept on the page, the lists' accented spellings in the keys -------------------------
@pytest.mark.parametrize("page", [
    "Nie chcę już żyć.",                      # as the list writes it
    "NIE CHCĘ JUŻ ŻYĆ",                       # capitals
    "nie chce juz zyc",                       # typed without accents
    "nie chcę juz żyć",                       # some words with, some without
    "Nie chce\u0328 juz\u0307 z\u0307yc\u0301",  # accents as separate combining marks (NFD)
    "nie\u00a0chcę\u2009już \n  żyć",        # a no-break space, a thin space, a line break
])
def test_a_page_is_matched_with_or_without_its_accents(lists, page):
    [s] = [s for s in lists.score_content(f"Wstęp. {page} Koniec.") if s.theme == "self-harm"]
    assert s.score >= 100, page


def test_marks_and_styled_letters_on_a_page_are_folded_before_it_is_searched(lists):
    # أريد أن أموت with its vowel marks (harakat)
    vocalised = "\u0623\u064f\u0631\u0650\u064a\u062f\u064f \u0623\u064e\u0646\u0652 \u0623\u064e\u0645\u064f\u0648\u062a\u064e"
    fullwidth = "ｈｏｗ ｔｏ ｋｉｌｌ ｍｙｓｅｌｆ"
    zalgo = "h\u0334o\u0334w\u0334 to k\u0334i\u0334l\u0334l\u0334 myself"
    for page in (vocalised, fullwidth, zalgo):
        assert any(s.theme == "self-harm" and s.score >= 100 for s in lists.score_content(page)), page


def test_page_words_keep_their_accents_even_without_the_look_up_of_the_words_as_written(lists):
    """Below ``evidence_at`` the words are those of the normal form searched: now the page's own, case
    folded (a folded page gave "videos porno", words that were not on the page)."""
    [s] = lists.score_content("Ver Vídeos Pornô.", evidence_at=None)
    assert s.theme == "pornography" and s.matched == ("vídeos pornô",)
    [s] = lists.score_content("Ver Vídeos Pornô.", evidence_at=0)
    assert s.matched[0] == "Vídeos Pornô"


def test_page_string_is_case_folded_and_spaced_but_keeps_accents():
    from schoolproxy.monitoring.phrases import content_string, page_string
    assert page_string("Żółć, <p>JAK\u00a0się   MASZ?!</p>\n\t“Dobrze”…") == " żółć p jak się masz p dobrze "
    assert content_string("Żółć  się") == " zolc sie "


def test_page_string_folds_case_in_any_script_wherever_on_the_page(lists):
    """A page in a script without case (Arabic) skips str.casefold; a cased letter anywhere on it —
    in its first words or far down — is still folded, and a phrase in capitals still scores."""
    import sys

    from schoolproxy.monitoring.phrases import _CASED_LEADS, page_string
    cased = {chr(c).encode()[0] for c in range(0x80, sys.maxunicode + 1)
             if not 0xD800 <= c <= 0xDFFF and chr(c).casefold() != chr(c)}
    assert set(_CASED_LEADS) == cased   # the list the check uses is the running Python's Unicode
    arabic = "ذهب الطلاب في رحلة مدرسية إلى المتحف " * 100
    assert page_string(arabic + "ŻYĆ Straße ΣΟΦΙΑ") == page_string(arabic)[:-1] + " żyć strasse σοφια "
    assert page_string("ŻYĆ " + arabic) == " żyć" + page_string(arabic)
    [s] = [s for s in lists.score_content(arabic + " HOW TO KILL MYSELF") if s.theme == "self-harm"]
    assert s.score >= 100

# -- concept rules: term sets, templates, inflections, stems, nearness, tiers ------------------------------
def concept_lists(tmp_path, rules: str, sets: str = ""):
    root = tmp_path / "phrases"
    (root / "t").mkdir(parents=True)
    (root / "sets.txt").write_text(sets)
    (root / "t" / "en.txt").write_text(rules)
    return load_phrase_lists(root)


def test_a_template_matches_every_phrasing_of_its_sets_and_shows_the_words_typed(tmp_path):
    lists = concept_lists(tmp_path, "< @i @want @gone ><100>\n",
                          "@i = i | im\n@want = want to | wanna\n@gone = die | stop existing\n")
    for typed in ("i wanna die", "I want to stop existing", "pls im wanna DIE!!", "i wannaaa dieee"):
        [s] = lists.score(typed)
        assert s.score == 100, typed
    assert lists.score("pls i WANT TO stop existing now")[0].matched == ("i WANT TO stop existing",)
    assert lists.score("want to die") == [] and lists.score("i die want to") == []   # every piece, in order


def test_a_set_named_again_is_extended_and_an_unknown_set_is_an_error_naming_the_line(tmp_path):
    lists = concept_lists(tmp_path, "@gone = nie żyć\n< @gone ><60>\n", "@gone = die\n")
    assert lists.score("die")[0].score == 60 and lists.score("nie zyc")[0].score == 60
    with pytest.raises(PhraseError, match=r"en.txt:2: unknown term set @nope"):
        concept_lists(tmp_path / "b", "# x\n< @nope ><60>\n")
    with pytest.raises(PhraseError, match="refers to itself"):
        concept_lists(tmp_path / "c", "< @a ><60>\n", "@a = x | @a\n")


def test_digits_are_not_squeezed_so_a_number_keeps_its_zeros():
    assert tokens("2000 calories") == ["2000", "calories"]
    assert tokens("diiiie") == ["die"]


def test_alternatives_written_inside_a_part_are_an_error_naming_the_line(tmp_path):
    # "< learn from | agree with >" would look for the literal words "learn from | agree with": never found.
    with pytest.raises(PhraseError, match=r"en.txt:2: alternatives go in a term set"):
        concept_lists(tmp_path, "< mein kampf ><10>\n< mein kampf >,< learn from | agree with ><80>\n")


def test_inflections_and_stems(tmp_path):
    lists = concept_lists(tmp_path, "< cut~ myself ><80>\n< samobój* ><40>\n< odblok>,< szkoł><60>\n")
    for typed in ("cut myself", "cutting myself", "cuts myself", "cuting myself"):
        assert lists.score(typed)[0].score == 80, typed
    assert lists.score("cute myself") == []
    assert lists.score("myśli samobójcze")[0].score == 40
    assert lists.score("jak odblokować youtube w szkole")[0].score == 60       # < x> is a word start
    assert lists.score("zodblokować szkoła") == []


def test_a_verb_typed_in_another_form_matches_a_phrase_written_in_its_base_form(tmp_path):
    lists = concept_lists(tmp_path, "< @want @gone ><100>\n< block youtube ><80>\n< bullied at school ><60>\n"
                                    "< laugh at me ><50>\n< bully me ><50>\n",
                          "@want = thinking of | thinking about | want to\n@gone = die | end it\n")
    for typed in ("thinking of ending it tonight", "i keep thinking about dying", "want to ended it"):
        assert lists.score(typed)[0].score == 100, typed
    assert lists.score("thinking of ending it")[0].matched == ("thinking of ending it",)   # as typed
    assert lists.score("how to blocking youtube")[0].score == 80
    # Not the other way: a phrase written inflected is not matched by its base form typed.
    assert lists.score("bullied at school")[0].score == 60 and lists.score("a bully at school") == []
    # A word a list names on its own keeps its own sense.
    named = concept_lists(tmp_path / "b", "< block youtube ><80>\n< blocked ><10>\n")
    assert named.score("school blocked youtube")[0].score == 10
    # A look-alike holds in the base form too.
    (tmp_path / "phrases" / "exceptions.txt").write_text("< die laughing >\n")
    assert load_phrase_lists(tmp_path / "phrases").score("i want to die laughing") == []


def test_a_combination_counts_only_when_its_parts_are_near_each_other(tmp_path):
    lists = concept_lists(tmp_path, "<@gift>,<@pics><80>\n", "@gift = robux | gift card\n@pics = pics | photos\n")
    assert lists.score("he gives me robux for pics")[0].score == 80
    assert lists.score("photos of him. he said he'd get me a gift card")[0].score == 80   # either order
    far = "robux " + "and then we played the game for a long time, talked about school and homework " * 3 + "pics"
    assert lists.score(far) == []
    assert lists.score_content(far) == [] and lists.score_content(f"<p>{far}</p> robux for pics")[0].score == 80


def test_tiers_of_one_concept_count_once_so_benign_context_can_take_them_back(tmp_path):
    lists = concept_lists(tmp_path, "<@make>,< bomb ><70>\n<@how>,<@make>,< bomb ><90>\n< minecraft ><-60>\n",
                          "@make = make~ | build~\n@how = how to | how do i\n")
    assert lists.score("how to make a bomb")[0].score == 90
    assert lists.score("make a bomb")[0].score == 70
    assert lists.score("how to make a bomb in minecraft")[0].score == 30


def test_the_strongest_evidence_wins_when_a_phrase_holds_a_weightier_combination(tmp_path):
    # "isis beheading" listed as a phrase (40) must not hide "beheading" x a group (80) inside its words,
    # nor add to it: the weightier rule counts, once.
    lists = concept_lists(tmp_path, "< isis beheading ><40>\n<@group>,< beheading ><80>\n"
                                    "< hurt animals ><50>\n< hurt~ >,< animals ><60>\n", "@group = isis\n")
    assert lists.score("isis beheading videos")[0].score == 80
    assert lists.score("is it fun to hurt animals")[0].score == 60


@pytest.mark.parametrize("text,theme", [
    ("i really want to stop being alive", "self-harm"), ("would my friends even notice if i disappeared", "self-harm"),
    ("how many co codamol would be fatal", "self-harm"), ("he gives me robux if i send photos", "grooming"),
    ("older guy says i shouldnt tell my mum about our chats", "grooming"),
    ("nobody wants to be my partner in class", "bullying"),
    ("best knife to keep in my school bag for protection", "weapons"), ("where to buy thc gummies uk", "drugs"),
    ("how to get around goguardian", "circumvention"), ("how to hide skipping meals from parents", "eating-disorders"),
    ("trans people are freaks", "hate"), ("im going to beat him up tomorrow", "violence"),
    ("pocięłam się wczoraj", "self-harm"), ("cómo dejar de comer para adelgazar", "eating-disorders"),
    ("wat happens if u take 20 paracetamol", "self-harm"), ("i keep thinking about dying", "self-harm"),
    ("my step dad beats my mum", "violence"), ("a grown man keeps messaging me on insta", "grooming"),
    ("mój ojczym bije mamę", "violence"), ("voy a matarlo", "violence"), ("mujhe marna hai", "self-harm"),
])
def test_concept_rules_find_phrasings_no_list_spells_out(lists, text, theme):
    assert any(s.theme == theme and s.score >= 60 for s in lists.score(text)), lists.score(text)


@pytest.mark.parametrize("text", [
    "my feet are killing me", "how to use instagram filters", "why did hitler hate the jews",
    "how to make a bomb in minecraft", "i cut my hand cooking", "i burnt myself on the oven",
    "how to write a goodbye card for my teacher", "how many paracetamol can i take for a headache",
    "can dogs die from eating chocolate", "buy a knife set for my mum", "everyone hates mondays",
    "kupić trawę z rolki do ogrodu", "why do i feel sick after eating", "the fastest train in the world",
    "my dad beat me at fifa again", "ive been biting my nails every day", "thinking about dying my hair pink",
    "vou matar a saudade da minha avó", "tata bije rekord w bieganiu", "how to starve a fire of oxygen",
])
def test_everyday_senses_of_the_concept_words_do_not(lists, text):
    assert top(lists, text)[1] < 60, lists.score(text)


# Which list word a misspelling is corrected to must not depend on the interpreter's hash seed: the
# same search once raised an alert and once not, from one run of the proxy to the next.
_SEED_PROBE = """
import hashlib, json, sys
from pathlib import Path
from schoolproxy.monitoring.evaluation import load_corpus
from schoolproxy.monitoring.phrases import load_phrase_lists
lists = load_phrase_lists(Path(sys.argv[1]))
out = []
for q in load_corpus():
    for text in (q.text, q.text.replace("e", "", 1), q.text.replace("i", "ii", 1)):
        out.append([text, sorted((s.theme, s.score) for s in lists.score(text))])
print(hashlib.sha256(json.dumps(out).encode()).hexdigest())
"""


def test_scores_do_not_depend_on_the_hash_seed():
    import os
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent / "filterlists" / "phrases"
    digests = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        digests.add(subprocess.run([sys.executable, "-c", _SEED_PROBE, str(root)], env=env, check=True,
                                   capture_output=True, text=True, timeout=120).stdout.strip())
    assert len(digests) == 1
