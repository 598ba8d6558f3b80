"""Street addresses: house number + street name + street type, in the ways Europe and the
English-speaking world write them; PO boxes; unit parts (Apt., Suite, Flat, Piso, Piano …).

Three shapes, each found from the *house number* (a standalone number of one to five digits,
an optional letter, an optional ``/12`` or ``-12``), so the pass costs nothing on a text
without digits and re skips ahead to digits:

* number first, English and French style: ``2471 Wagner Groves``, ``12 Oak St.``,
  ``Flat 3 Cooper Lake``, ``19, Chana Marg``, ``415, rue Thierry Seguin`` — the words after the
  number are capitalised names ending in a street type (``STREET_TYPES``), or a French street
  word (``rue``, ``avenue``, ``boulevard`` …) followed by names;
* number last, glued street type: ``Kyrkogatan 37``, ``Albert-Mitschke-Straße 7``,
  ``Budigstr. 90/10``, ``Asnæsvej 6``, ``Nyminde Allé 36``, ``van der Dussenallee 57`` — the
  word before the number ends in a Germanic or Nordic street type (``COMPOUND_TYPES``);
* number last, street word first: ``Via Tarchetti, 829``, ``Calle Mayor 5``, ``ul. Podmiejska 42``,
  ``Praça da Sé, 12``, ``Atatürk Cad. No: 5`` — a street word of the Romance or Slavic languages
  (``STREET_WORDS``) then one to four capitalised names (particles allowed: de, da, di, van).

A unit before (``Apt 4``, ``Level 0``, ``H.No.``) or after (``Apt. 269``, ``Piso 9``) is part of
the address. Without a number, a French/Romance street word followed by names
(``rue Guillaume Alves``) counts only after an address word (``address``, ``lives at``,
``ship to``, ``adresse`` …, see ``ADDRESS_CONTEXT``). Every regex here runs at one position
(``match``) or is bounded, so the pass is linear in the text.
"""

from __future__ import annotations

import re
from bisect import bisect_right

_A = re.ASCII

# English street types (USPS Publication 28 suffixes, Royal Mail, Australia Post AS 4590,
# India), with their usual abbreviations; compared case-sensitively on capitalised words.
STREET_TYPES = frozenset(
    ["Alley", "Allee", "Aly", "Anchorage", "Annex", "Approach", "Arcade", "Avenue", "Ave", "Av", "Bank", "Bay", "Beach", "Bend", "Bluff", "Bluffs", "Bottom", "Boulevard", "Blvd", "Branch", "Brae", "Bridge", "Brook", "Brooks", "Broadway", "Brow", "Burg", "Burgs", "Bypass", "Byway", "Camp", "Canyon", "Cape", "Causeway", "Center", "Centers", "Centre", "Chase", "Chowk", "Circle", "Circles", "Cir", "Circuit", "Circus", "Cliff", "Cliffs", "Close", "Club", "Colonnade", "Common", "Commons", "Concourse", "Corner", "Corners", "Corso", "Course", "Court", "Courts", "Ct", "Courtyard", "Cove", "Coves", "Creek", "Crescent", "Cres", "Crest", "Crossing", "Crossroad", "Crossroads", "Crossway", "Curve", "Dale", "Dam", "Dell", "Deviation", "Dip", "Divide", "Drive", "Drives", "Dr", "Driveway", "Edge", "End", "Esplanade", "Estate", "Estates", "Expressway", "Expy", "Extension", "Extensions", "Fairway", "Fall", "Falls", "Ferry", "Field", "Fields", "Flat", "Flats", "Ford", "Fords", "Forest", "Forge", "Forges", "Fork", "Forks", "Fort", "Freeway", "Fwy", "Front", "Galli", "Gali", "Ganj", "Garden", "Gardens", "Gdns", "Gate", "Gateway", "Gates", "Glade", "Glen", "Glens", "Grange", "Green", "Greens", "Grove", "Groves", "Gr", "Harbor", "Harbors", "Harbour", "Haven", "Heights", "Highway", "Hwy", "Hill", "Hills", "Hollow", "Inlet", "Island", "Islands", "Isle", "Junction", "Junctions", "Key", "Keys", "Knoll", "Knolls", "Lake", "Lakes", "Land", "Landing", "Lane", "Ln", "Laneway", "Light", "Lights", "Link", "Loaf", "Lock", "Locks", "Lodge", "Loop", "Mall", "Manor", "Manors", "Marg", "Meadow", "Meadows", "Mews", "Mill", "Mills", "Mission", "Motorway", "Mount", "Mountain", "Mountains", "Nagar", "Neck", "Nook", "Orchard", "Oval", "Overpass", "Parade", "Park", "Parks", "Parkway", "Parkways", "Pkwy", "Pass", "Passage", "Path", "Pathway", "Pike", "Pine", "Pines", "Place", "Pl", "Plain", "Plains", "Plaza", "Point", "Points", "Port", "Ports", "Prairie", "Promenade", "Quay", "Quays", "Radial", "Ramp", "Ranch", "Rapid", "Rapids", "Reach", "Rest", "Retreat", "Ridge", "Ridges", "Rise", "River", "Road", "Roads", "Rd", "Route", "Row", "Rue", "Run", "Shoal", "Shoals", "Shore", "Shores", "Skyway", "Spring", "Springs", "Spur", "Spurs", "Square", "Squares", "Sq", "Station", "Strand", "Stravenue", "Stream", "Street", "Streets", "St", "Strip", "Summit", "Terrace", "Ter", "Throughway", "Trace", "Track", "Trafficway", "Trail", "Trl", "Tunnel", "Turnpike", "Underpass", "Union", "Unions", "Vale", "Valley", "Valleys", "Via", "Viaduct", "View", "Views", "Village", "Villages", "Ville", "Vista", "Walk", "Walks", "Wall", "Way", "Ways", "Well", "Wells", "Wharf", "Wynd", "Yard", "Access", "Alleyway", "Amble", "Artery", "Basin", "Brace", "Break", "Centreway", "Circlet", "Concourse", "Copse", "Cruiseway", "Cutting", "Distributor", "Elbow", "Entrance", "Firetrail", "Footway", "Foreshore", "Frontage", "Gap", "Ground", "Gully", "Highroad", "Interchange", "Intersection", "Lees", "Lookout", "Meander", "Mew", "Parklands", "Piazza", "Plateau", "Quad", "Quadrangle", "Quadrant", "Ramble", "Ridgeway", "Riverway", "Riviera", "Roadside", "Roadway", "Ronde", "Rosebowl", "Rotary", "Siding", "Stairs", "Subway", "Tarn", "Thoroughfare", "Tollway", "Tor", "Towers", "Trailer", "Triangle", "Trunkway", "Villas", "Wade", "Walkway", "Zila", "Peth", "Bagh", "Colony", "Enclave"]
)
# Road types of AS 4590 that are everyday words in telemetry ("3 Search Results End"): only
# after an address word (ADDRESS_CONTEXT).
GENERIC_TYPES = frozenset(
    ["Block", "Cross", "Edge", "End", "Follow", "Formation", "Front", "Line", "Link", "Little", "Lower", "Outlook", "Part", "Pocket", "Range", "Reach", "Reserve", "Round", "Slope", "Sound", "Steps", "Strip", "Top", "Turn", "Upper"]
)
# Street types glued to the name (or standing after it) in German, Dutch and the Nordic
# languages; compared on the lower-cased word's ending.
COMPOUND_TYPES = (
    "straße", "strasse", "str.", "weg", "gasse", "platz", "allee", "ring", "damm", "ufer", "steig", "pfad",
    "chaussee", "markt", "graben", "promenade", "laan", "straat", "plein", "gracht", "kade", "singel", "dreef",
    "steeg", "baan", "hof", "pad", "boulevard", "plantsoen", "gatan", "vägen", "gränd", "torget", "stigen",
    "backen", "allén", "leden", "gade", "vej", "stræde", "allé", "plads", "torv", "vænget", "katu", "tie",
    "kuja", "polku", "bulevardi", "kaari", "aukio", "tori", "raitti", "rinne", "veien", "gata", "gaten",
)  # fmt: skip
# English words that end like a street type ("during 3 retries", "String 5", "Keypad 2").
_NOT_COMPOUND = frozenset(
    ["spring", "string", "during", "bring", "ring", "offering", "keyring", "substring", "docstring", "querystring", "keypad", "notepad", "numpad", "touchpad", "trackpad", "ipad", "launchpad", "scratchpad", "gamepad", "mousepad", "helipad", "lilypad", "tie", "bowtie", "necktie", "cutie", "sortie", "untie", "hof", "pad", "weg", "tori", "baan", "kade"]
)
_NOT_COMPOUND_ENDINGS = ("ering", "uring", "oring", "iring", "aring", "eting", "pring", "tring")
# Street words before the name: French, Spanish, Catalan, Italian, Portuguese, Polish, Turkish.
STREET_WORDS = frozenset(
    ["rue", "avenue", "av", "av.", "ave", "boulevard", "bd", "bd.", "blvd", "chemin", "impasse", "allée", "place", "quai", "route", "cours", "passage", "square", "voie", "sentier", "calle", "c.", "c/", "cl.", "avenida", "avda", "avda.", "paseo", "pº", "plaza", "pza.", "pasaje", "ronda", "glorieta", "camino", "carrera", "travesía", "callejón", "rambla", "vía", "carretera", "ctra.", "urbanización", "cuesta", "alameda", "bulevar", "carrer", "passeig", "plaça", "via", "viale", "piazza", "piazzale", "corso", "largo", "vicolo", "strada", "stretto", "canale", "borgo", "contrada", "rotonda", "incrocio", "lungomare", "vico", "salita", "traversa", "rione", "rua", "praça", "travessa", "estrada", "rodovia", "viela", "vila", "parque", "praia", "condomínio", "aeroporto", "conjunto", "quadra", "setor", "ladeira", "vereda", "jardim", "lagoa", "morro", "chácara", "residencial", "passarela", "sítio", "trecho", "núcleo", "esplanada", "fazenda", "loteamento", "distrito", "feira", "favela", "recanto", "lago", "estação", "colônia", "campo", "área", "vale", "pátio", "trevo", "viaduto", "ul.", "ulica", "al.", "aleja", "pl.", "plac", "os.", "osiedle", "skwer", "rondo", "acceso", "vial", "pasadizo", "cañada", "polígono", "barrio", "bajada", "costanilla", "arroyo", "colonia", "partida", "rinconada", "sector"]
)
# Turkish and Spanish markers between the street and its number (Atatürk Cad. No: 5, Mayor nº 5).
_TURKISH = ("cad.", "caddesi", "cd.", "sok.", "sokak", "sk.", "sokağı", "bulvarı", "blv.", "mah.", "mahallesi")

_UPPER = r"A-Z\u00c0-\u00de\u0100-\u024f\u0370-\u03ff\u0400-\u042f"
_NAME = rf"(?:[{_UPPER}][^\W\d_]*+(?:['’\-][^\W\d_]++)*+|[0-9]{{1,3}}(?:st|nd|rd|th))"
_PARTICLES = r"(?:(?:de|del|de la|des|du|da|das|do|dos|di|della|van|von|der|den|la|le|el|l'|d')\s?)"
_UNIT_WORDS = (
    r"(?:Apt|Apartment|Appartamento|Apartamento|Wohnung|Whg|Apto|Suite|Ste|Unit|Flat|Fl|Floor|Room|Rm|Bldg|Building|Piso|Piano|Puerta|Pta|Esc"
    r"|Escalera|Bloco|Bl|Andar|Stiege|Top|Etage|lgh|bus|Dpto|Int|Scala|Interno)"
)
_UNIT_AFTER = rf"(?:,?\s(?:{_UNIT_WORDS}\.?\s?(?:No\.?\s?)?[0-9][0-9A-Za-z\-]{{0,5}}+|#\s?[0-9][0-9A-Za-z\-]{{0,5}}+))?"
_TYPES = "(?:" + "|".join(sorted(STREET_TYPES | GENERIC_TYPES, key=lambda t: (-len(t), t))) + ")"
# What may follow the house number in the number-first shapes.
_FRENCH = r"(?:rue|avenue|av\.|boulevard|bd|chemin|impasse|allée|place|quai|route|cours|passage|square|voie|sentier)"
_AFTER_NUMBER = re.compile(
    rf",?\s(?:(?P<en>(?:{_NAME}\s){{1,3}}(?P<type>{_TYPES})\b\.?)"
    rf"|(?P<fr>(?i:{_FRENCH})\s{_PARTICLES}{{0,2}}{_NAME}(?:\s{_PARTICLES}{{0,2}}{_NAME}){{0,3}}))"
    rf"(?P<unit>{_UNIT_AFTER})"
)
# A unit or house prefix standing before the number (Level 0 4 Jenna Dip, H.No. 16, Manne Road).
_UNIT_BEFORE = re.compile(
    rf"(?:\b(?:{_UNIT_WORDS}|Level|Lvl|Lot|Shop)\.?\s?[0-9A-Za-z]{{1,5}}\s|\bH\.\s?No\.\s?|\bHouse No\.?\s?|#)$"
)
_UNIT_TAIL = re.compile(_UNIT_AFTER)
# The house number, standing alone (not inside 1.5, 10:30, 2021-05-05, v2, 3/4 of ...).
_FIGURES = r"[0-9]{0,4}+[A-Za-z]?(?:[/\-][0-9]{1,4}+[A-Za-z]?)?"
# A candidate is a number after a word (number-last shapes: Kyrkogatan 37, Via Roma, 5, No: 5)
# or before a capitalised word, an ordinal or a French street word (number-first shapes); the
# look-arounds keep the scan from calling back for "=200", "(3", "x 4".
HOUSE_NUMBER = re.compile(
    r"[0-9](?<![\w.,:/\-+#@][0-9])"
    r"(?:(?<=[^\W\d_] [0-9])|(?<=[^\W\d_][.,:] [0-9])|(?<=° [0-9])"
    rf"|(?={_FIGURES},?\s(?:[{_UPPER}]|[0-9]{{1,3}}(?:st|nd|rd|th)\b|(?i:{_FRENCH})\b)))"
    rf"{_FIGURES}(?![\w/\-%]|[.,:][0-9])",
)
PO_BOX = re.compile(
    r"\b(?:P\.?\s?O\.?\s?Box|Post Office Box|Postfach|Apartado(?: de [Cc]orreos)?|Casella [Pp]ostale"
    r"|Caixa [Pp]ostal|Bo[iî]te [Pp]ostale|Postboks|Postbus)\s?#?\s?[0-9]{1,6}+\b",
    re.IGNORECASE,
)
CONTEXT = 48
# After an address word, a number and names are enough: "address 44, Kuruvilla".
_NUMBER_NAMES = re.compile(rf",?\s{_NAME}(?:\s{_NAME}){{0,2}}(?![\w'’\-])")
# After an address word, a street word and names without a number: "lives at rue Guillaume Alves".
_NO_NUMBER = re.compile(
    "(?:"
    + "|".join(
        re.escape(w) + "|" + re.escape(w[0].upper() + w[1:]) for w in sorted(STREET_WORDS, key=lambda w: -len(w))
    )
    + rf")\s{_PARTICLES}{{0,2}}{_NAME}(?:\s{_PARTICLES}{{0,2}}{_NAME}){{0,3}}(?![\w'’\-])"
)
# Address words, searched in the lower-cased text (see _cues).
ADDRESS_CONTEXT = re.compile(
    r"(?:address|addr|adresse|adres|adress|lives at|living at|resides at|residing at|ship to|shipping to"
    r"|deliver to|delivery to|dirección|indirizzo|endereço)(?![a-z])[:\s]*"
)
def may_have_context(lowered: str) -> bool:
    """A superset of ADDRESS_CONTEXT in a few substring tests (each ~0.3 us on 300 characters;
    the specific ones run only after a short one hits)."""
    if "ad" in lowered and ("addr" in lowered or "adres" in lowered):
        return True
    if "liv" in lowered and ("lives at" in lowered or "living at" in lowered or "deliver to" in lowered or (
        "delivery to" in lowered
    )):
        return True
    if "ship" in lowered and ("ship to" in lowered or "shipping to" in lowered):
        return True
    if "resid" in lowered and ("resides at" in lowered or "residing at" in lowered):
        return True
    if "dir" in lowered and ("dirección" in lowered or "indirizzo" in lowered):
        return True
    return "ç" in lowered and "dereç" in lowered  # a one-character search first: a memchr


_CUES: tuple[str, list[int]] = ("", [])


def _cues(text: str) -> list[int]:
    """Where address words end in ``text`` (remembered for the last text: the scan asks per number)."""
    global _CUES
    cached = _CUES
    if cached[0] is text:
        return cached[1]
    lowered = text.lower()
    ends = []
    if may_have_context(lowered):
        for m in ADDRESS_CONTEXT.finditer(lowered):
            if not m.start() or not lowered[m.start() - 1].isalpha():
                ends.append(m.end())
    _CUES = (text, ends)
    return ends


def _context(text: str, at: int) -> bool:
    """An address word ends within CONTEXT characters before ``at`` (a binary search: the scan
    asks once per number, and a text may hold many address words)."""
    ends = _cues(text)
    if not ends:
        return False
    i = bisect_right(ends, at)
    return i > 0 and ends[i - 1] >= at - CONTEXT


def _is_name(word: str) -> bool:
    return bool(word) and (word[0].isupper() or (word[0].isdigit() and word[-2:] in ("st", "nd", "rd", "th")))


_PARTICLE_WORDS = frozenset(["de", "del", "des", "du", "da", "das", "do", "dos", "di", "della", "van", "von", "der", "den", "la", "le", "el"])
_NUMBER_MARKS = frozenset(["No", "No.", "No:", "NO", "Nr", "Nr.", "nr.", "nº", "n°", "Nº", "N°", "n.", "nº."])
# Street words that are everyday English ("sent via Stripe 2"): only capitalised.
_CAPITALISED_ONLY = frozenset(
    ["via", "place", "route", "passage", "square", "plaza", "cours", "vale", "lago", "campo", "largo", "corso", "canale", "borgo", "feira", "area", "área", "parque", "vila", "jardim", "conjunto", "quadra", "setor", "trecho", "distrito", "recanto", "sector", "colonia", "partida"]
)


def _compound(word: str) -> int:
    """2: a word with a glued street type (Kyrkogatan, Budigstr., Albert-Mitschke-Straße); 1: one
    that may also be English (Elinering, Monitoring: only after an address word); 0: neither."""
    low = word.lower()
    if not low.endswith(COMPOUND_TYPES) or low in _NOT_COMPOUND:
        return 0
    return 1 if low.endswith(_NOT_COMPOUND_ENDINGS) and not low.endswith("rring") else 2


def _backward(text: str, start: int) -> int | None:
    """Where a number-last address ending right before ``start`` (the house number) begins."""
    if start < 3 or text[start - 1] != " ":
        return None
    # Quick refusal before splitting the window: "took 350 ms", "after 3 retries".
    space = text.rfind(" ", max(0, start - 40), start - 1)
    previous = text[space + 1 : start - 1]
    if previous[:1].islower() and not previous.endswith(COMPOUND_TYPES) and previous not in _NUMBER_MARKS:
        return None
    floor = max(0, start - 96)
    words = text[floor : start - 1].split(" ")
    if words and words[-1] in _NUMBER_MARKS:  # Atatürk Cad. No: 5
        words.pop()
    if not words:
        return None
    last = words[-1].rstrip(",")
    if not last or not last[0].isalpha() or (last[0].islower() and not last.endswith(COMPOUND_TYPES)):
        return None  # "took 350 ms", "step 4": a lower-case word before the number
    offsets = []  # where words[i] starts in text
    position = floor
    for word in words:
        offsets.append(position)
        position += len(word) + 1
    low = last.lower()
    kind = 2 if low in COMPOUND_TYPES else _compound(last)
    if kind and (low in COMPOUND_TYPES or last[0].islower()):
        # A street type standing after the names: Nyminde Allé 36, Taavetti Laitisen tie 9.
        index = len(words) - 1
        while index >= 1 and len(words) - index <= 3 and _is_name(words[index - 1]) and words[index - 1][-1:] != ",":
            index -= 1
        if index == len(words) - 1:
            return None
    elif kind:
        if kind == 1 and not _context(text, offsets[-1]):
            return None
        index = len(words) - 1
    elif low in _TURKISH:
        return offsets[-2] if len(words) >= 2 and _is_name(words[-2]) else None
    else:
        # Street word first, then one to four names (and particles) before the number.
        names = 0
        index = len(words) - 1
        while index >= 0 and names <= 4:
            word = words[index]
            bare = word.rstrip(",")
            if not bare or (bare != word and index < len(words) - 1):
                return None  # a comma inside the street name
            low = bare.lower()
            if names and low in STREET_WORDS and (bare[0].isupper() or low not in _CAPITALISED_ONLY):
                return offsets[index]
            if _is_name(bare):
                names += 1
            elif low not in _PARTICLE_WORDS:
                return None
            index -= 1
        return None
    # van der Dussenallee: particles before the compound.
    while index >= 1 and words[index - 1] in _PARTICLE_WORDS:
        index -= 1
    return offsets[index]


def at_number(text: str, start: int, end: int, floor: int = 0) -> tuple[int, int] | None:
    """The address around the house number ``text[start:end]``, as (begin, end), beginning no
    earlier than ``floor``; None when the number is not part of one."""
    found: tuple[int, int] | None = None
    after = _AFTER_NUMBER.match(text, end)
    if after is not None and (after.group("type") not in GENERIC_TYPES or _context(text, start)):
        found = (start, after.end())
    if found is None:
        begin = _backward(text, start)
        if begin is not None and begin >= floor:
            unit = _UNIT_TAIL.match(text, end)
            found = (begin, unit.end() if unit is not None else end)
    if found is None:
        # After an address word, a number and names are enough: "address 44, Kuruvilla".
        bare = _NUMBER_NAMES.match(text, end)
        if bare is None or not _cues(text):
            return None
        before = _UNIT_BEFORE.search(text, max(floor, start - 24), start)
        if not _context(text, before.start() if before is not None and before.end() == start else start):
            return None
        found = (start, bare.end())
    begin, finish = found
    before = _UNIT_BEFORE.search(text, max(floor, begin - 24), begin)
    if before is not None and before.end() == begin:
        begin = before.start()
    return begin, finish


def _may_have_box(lowered: str) -> bool:
    return "box" in lowered or "apartado" in lowered or "caixa" in lowered or "casella" in lowered or (
        "post" in lowered and ("postfach" in lowered or "postbus" in lowered or "postboks" in lowered)
    ) or ("î" in lowered and "boîte" in lowered)


def may_have_others(lowered: str, digits: bool) -> bool:
    """A superset of what other_spans looks for, in substring tests (a PO box has digits)."""
    return (digits and _may_have_box(lowered)) or may_have_context(lowered)


def other_spans(text: str, lowered: str) -> list[tuple[int, int]]:
    """PO boxes, and street names without a number after an address word."""
    spans: list[tuple[int, int]] = []
    if _may_have_box(lowered) and any(ch.isdigit() for ch in text):
        spans.extend((m.start(), m.end()) for m in PO_BOX.finditer(text))
    if may_have_context(lowered):
        for at in _cues(text):
            m = _NO_NUMBER.match(text, at)
            if m is not None:
                spans.append((m.start(), m.end()))
    return _merge(spans)


def find(text: str) -> list[tuple[int, int]]:
    """The (start, end) spans of the street addresses and PO boxes in ``text``, in order,
    without overlaps (the engine runs the same rules from its single scan)."""
    spans: list[tuple[int, int]] = []
    last_end = 0
    for m in HOUSE_NUMBER.finditer(text):
        if m.start() < last_end:
            continue
        found = at_number(text, m.start(), m.end(), last_end)
        if found is not None:
            spans.append(found)
            last_end = found[1]
    return _merge(spans + other_spans(text, text.lower()))


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    if len(spans) < 2:
        return spans
    spans.sort()
    merged = [spans[0]]
    for start, end in spans[1:]:
        if start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
