"""Typed vocabularies of the labeller check set (:mod:`mechit.ffn.checkset`).

Each tuple is one pool of words whose label is known by construction. They were written
for the check set, not copied from any labeller's lexicon; where a pool shares words with
the lexicon labeller's lists, that is stated in docs/ffn.md.
Generated pools (frequent words of other languages, inflected forms, rhymes, programming
keywords) are built in :mod:`mechit.ffn.checkset` from wordfreq, lemminflect and Pygments.

>>> len(TOPICS) >= 8 and all(len(words) >= 36 for words in TOPICS.values())
True
"""

from __future__ import annotations

MATH_TERMS = (
    "hypotenuse polynomial logarithm coefficient denominator numerator quotient remainder "
    "vertex tangent sine cosine asymptote eigenvalue determinant integer fraction decimal "
    "parabola hyperbola ellipse perimeter circumference diameter radius area volume "
    "factorial permutation combination probability variance deviation median average "
    "matrix vector scalar derivative integral limit summation exponent logarithmic "
    "theorem lemma axiom corollary proof equation inequality inverse reciprocal "
    "multiplication division subtraction addition arithmetic algebra geometry calculus "
    "trigonometry polygon hexagon pentagon rhombus trapezoid quadrilateral congruent "
    "perpendicular parallel bisector divisor multiple prime composite modulo percentile"
).split()

NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand million billion trillion dozen first third fourth fifth "
    "sixth seventh eighth ninth tenth twelfth twentieth hundredth half quarter twice"
).split()

MATH_SYMBOLS = tuple("+ - * / = < > ^ % ± × ÷ √ ∑ π ≤ ≥ ≠ ≈ ∞ ∫".split())

# Keywords of languages whose Pygments lexers build them with regular expressions.
JAVASCRIPT_JAVA_KEYWORDS = (
    "function var let const typeof instanceof undefined prototype constructor extends "
    "implements interface abstract synchronized volatile transient throws instanceof "
    "console document window addEventListener querySelector getElementById innerHTML "
    "setTimeout parseInt parseFloat JSON stringify Promise async await null boolean "
    "ArrayList HashMap System println toString equals hashCode"
).split()

WRITING_WORDS = (
    "alliteration assonance metaphor simile hyperbole personification onomatopoeia irony "
    "satire allegory anecdote foreshadowing flashback protagonist antagonist narrator "
    "monologue soliloquy dialogue stanza couplet sonnet haiku limerick ballad ode elegy "
    "epic memoir biography autobiography essay novella novel anthology manuscript draft "
    "prose verse rhyme meter cadence imagery symbolism motif theme tone diction "
    "eloquent lyrical poignant vivid evocative whimsical terse verbose rhetorical "
    "persuasive narrative descriptive expository epilogue prologue chapter paragraph "
    "headline byline editorial op-ed screenplay playwright poet novelist storyteller "
    "plot twist climax denouement setting characterization genre fiction nonfiction"
).split()

# Function words of one kind each (the "syntax" level).
FUNCTION_WORD_KINDS = {
    "prepositions": (
        "about above across after against along amid among around at before behind below "
        "beneath beside besides between beyond by despite down during except for from in "
        "inside into near of off on onto opposite outside over past per since through "
        "throughout toward towards under underneath until unto up upon via with within without"
    ).split(),
    "pronouns": (
        "i me my mine myself you your yours yourself yourselves he him his himself she her "
        "hers herself it its itself we us our ours ourselves they them their theirs "
        "themselves who whom whose whoever whomever someone anyone everyone nobody"
    ).split(),
    "determiners": (
        "the a an this that these those each every some any no all both either neither many "
        "much few little several most more less enough such what which another other fewer "
        "least half whatever whichever certain various"
    ).split(),
    "conjunctions": (
        "and but or nor so yet because although though while whereas unless until since if "
        "whether once than when whenever where wherever after before lest provided whilst "
        "till hence therefore however thus moreover furthermore nevertheless nonetheless "
        "otherwise meanwhile"
    ).split(),
    "auxiliaries": (
        "be am is are was were been being have has had having do does did will would shall "
        "should can could may might must ought can't won't isn't aren't wasn't weren't don't "
        "doesn't didn't hasn't haven't hadn't wouldn't shouldn't couldn't mustn't"
    ).split(),
}

# Topical sets (the "semantics" level): words of one subject, with no shared form.
TOPICS = {
    "animals": (
        "dog cat horse cow sheep goat pig rabbit mouse rat squirrel deer wolf fox bear lion "
        "tiger leopard elephant giraffe zebra monkey gorilla kangaroo koala camel donkey "
        "buffalo moose otter beaver badger hedgehog raccoon skunk hamster panda"
    ).split(),
    "food": (
        "bread cheese butter rice pasta noodles soup salad steak chicken bacon sausage egg "
        "omelet pancake waffle cereal yogurt honey jam apple banana orange grape lemon "
        "cherry peach pear mango carrot potato tomato onion garlic pepper mushroom broccoli"
    ).split(),
    "body": (
        "head face eye ear nose mouth lip tongue tooth chin cheek neck shoulder arm elbow "
        "wrist hand finger thumb chest stomach back hip leg knee ankle foot toe heel skin "
        "bone muscle heart lung liver kidney brain blood"
    ).split(),
    "clothing": (
        "shirt blouse sweater jacket coat vest dress skirt trousers pants jeans shorts sock "
        "shoe boot sandal slipper hat cap scarf glove mitten belt tie suit uniform pajamas "
        "robe apron hoodie cardigan raincoat overalls tuxedo gown bikini"
    ).split(),
    "weather": (
        "rain snow hail sleet fog mist cloud storm thunder lightning wind breeze gale "
        "hurricane tornado cyclone drizzle downpour blizzard frost ice heatwave drought "
        "humidity rainbow sunshine sunny cloudy rainy windy foggy stormy snowy forecast "
        "temperature climate monsoon"
    ).split(),
    "music": (
        "guitar piano violin cello viola harp flute clarinet oboe bassoon trumpet trombone "
        "tuba saxophone drum cymbal xylophone accordion harmonica banjo ukulele mandolin "
        "organ synthesizer orchestra choir melody harmony rhythm tempo chord concert "
        "symphony opera band singer"
    ).split(),
    "sports": (
        "football soccer basketball baseball tennis golf hockey rugby cricket volleyball "
        "swimming cycling running boxing wrestling skiing surfing rowing sailing archery "
        "fencing judo karate gymnastics marathon sprint referee goalkeeper stadium "
        "tournament championship athlete coach trophy medal badminton lacrosse"
    ).split(),
    "household": (
        "table chair sofa couch bed pillow blanket mattress lamp curtain carpet rug shelf "
        "cupboard drawer wardrobe mirror sink bathtub shower toilet oven stove fridge "
        "kettle toaster microwave dishwasher kitchen bedroom bathroom hallway garage attic "
        "basement window doorbell"
    ).split(),
    "vehicles": (
        "car truck bus van taxi bicycle motorcycle scooter train tram subway airplane "
        "helicopter jet rocket boat ship ferry yacht canoe kayak submarine tractor "
        "ambulance limousine wagon carriage sled trailer lorry minibus glider airship "
        "hovercraft skateboard caravan moped"
    ).split(),
    "professions": (
        "doctor nurse teacher lawyer engineer farmer baker butcher carpenter plumber "
        "electrician mechanic pilot sailor soldier firefighter policeman judge dentist "
        "surgeon pharmacist architect accountant banker cashier waiter chef janitor "
        "librarian journalist photographer painter sculptor tailor gardener veterinarian economist"
    ).split(),
}

# Orthographic rimes and onsets (the "phonology" level): spelling stands in for sound, as no
# pronouncing dictionary ships offline here. Endings and onsets that are affixes are left out.
RIMES = ("ght", "ain", "ell", "ack", "ice", "all", "ore", "ick", "ide", "ite", "ire", "out")
ONSETS = ("str", "gra", "pla", "bri", "bro", "cla", "bla", "cra", "sha", "spe", "gre")
AFFIX_ENDINGS = (
    "ing", "ed", "ly", "ion", "ers", "est", "ous", "ity", "ent", "ant", "ive", "ful", "ess",
    "ism", "ist", "ble", "al", "er", "es", "ies", "nce", "ize", "ise", "ary", "ory", "ian",
    "ics", "ure", "age", "ate", "ogy",
)
