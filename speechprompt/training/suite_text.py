"""What the task suite's clips say: command words, intent phrasings, sentences (data only, no logic).

Each list mirrors a dataset of the SpeechPrompt v2 benchmark (arXiv 2303.00733, Table 1): Google Speech
Commands v1 (ten words + unknown + silence), Grabo (Dutch robot commands, spoken as short phrases), the
Lithuanian and Arabic speech-command sets (words), Fluent Speech Commands (action / object / location), and
VoxForge's six languages for language ID.
"""

from __future__ import annotations

# Google Speech Commands v1: the ten command words, and the auxiliary words that make up "unknown".
EN_COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
EN_UNKNOWN = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
              "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Grabo-like Dutch robot commands: class -> phrasings.
NL_COMMANDS = {
    "vooruit": ("vooruit", "ga vooruit", "rij vooruit"),
    "achteruit": ("achteruit", "ga achteruit", "rij achteruit"),
    "links": ("links", "draai naar links", "ga naar links"),
    "rechts": ("rechts", "draai naar rechts", "ga naar rechts"),
    "stop": ("stop", "sta stil", "stop nu"),
    "sneller": ("sneller", "ga sneller", "rij sneller"),
    "langzamer": ("langzamer", "ga langzamer", "rij langzamer"),
    "omdraaien": ("draai om", "omdraaien", "keer om"),
    "oppakken": ("pak op", "pak het op", "neem het"),
    "loslaten": ("laat los", "laat het los", "zet het neer"),
}

# Lithuanian command words (class name = ASCII transliteration).
LT_COMMANDS = {
    "taip": "taip", "ne": "ne", "kairen": "kairėn", "desinen": "dešinėn", "aukstyn": "aukštyn",
    "zemyn": "žemyn", "pirmyn": "pirmyn", "atgal": "atgal", "ijunk": "įjunk", "isjunk": "išjunk",
}

# Arabic speech commands (digits + six control words, as the Arabic Speech Commands set).
AR_COMMANDS = {
    "sifr": "صفر", "wahid": "واحد", "ithnan": "اثنان", "thalatha": "ثلاثة", "arbaa": "أربعة",
    "khamsa": "خمسة", "sitta": "ستة", "sabaa": "سبعة", "thamaniya": "ثمانية", "tisaa": "تسعة",
    "tafeel": "تفعيل", "taateel": "تعطيل", "muwafiq": "موافق", "ilgha": "إلغاء", "iftah": "افتح",
    "ighlaq": "أغلق",
}

# Fluent Speech Commands style intents: "action-object-location" -> phrasings.
INTENTS = {
    "activate-lights-none": ("turn on the lights", "switch on the lights", "lights on"),
    "deactivate-lights-none": ("turn off the lights", "switch off the lights", "lights off"),
    "activate-lights-kitchen": ("turn on the kitchen lights", "switch on the lights in the kitchen",
                                "kitchen lights on"),
    "deactivate-lights-kitchen": ("turn off the kitchen lights", "switch off the lights in the kitchen",
                                  "kitchen lights off"),
    "activate-lights-bedroom": ("turn on the bedroom lights", "switch on the lights in the bedroom",
                                "bedroom lights on"),
    "deactivate-lights-bedroom": ("turn off the bedroom lights", "switch off the lights in the bedroom",
                                  "bedroom lights off"),
    "increase-heat-none": ("turn up the heat", "increase the temperature", "make it warmer"),
    "decrease-heat-none": ("turn down the heat", "decrease the temperature", "make it cooler"),
    "increase-volume-none": ("turn up the volume", "make it louder", "increase the sound"),
    "decrease-volume-none": ("turn down the volume", "make it quieter", "decrease the sound"),
    "activate-music-none": ("play the music", "start the music", "put on some music"),
    "deactivate-music-none": ("stop the music", "pause the music", "turn the music off"),
    "bring-newspaper-none": ("bring me the newspaper", "get me the newspaper", "fetch the newspaper"),
    "bring-juice-none": ("bring me some juice", "get me the juice", "fetch some juice"),
    "bring-shoes-none": ("bring me my shoes", "get my shoes", "fetch my shoes"),
    "change_language-chinese-none": ("switch the language to chinese", "change language to chinese",
                                     "use chinese"),
}

# Language ID: words for the one language without a Debian word list (Russian); the others use
# ``corpus.load_words`` (the Debian lists the backbone corpus draws from).
RU_WORDS = (
    "дом", "вода", "время", "человек", "город", "работа", "слово", "место", "дело", "жизнь", "день",
    "рука", "глаз", "друг", "дорога", "земля", "окно", "книга", "школа", "машина", "улица", "страна",
    "утро", "вечер", "ночь", "солнце", "небо", "море", "лес", "поле", "хлеб", "молоко", "чай", "мама",
    "отец", "брат", "сестра", "ребенок", "собака", "кошка", "большой", "маленький", "новый", "старый",
    "хороший", "плохой", "красный", "белый", "быстро", "медленно", "сегодня", "завтра", "вчера",
    "говорить", "читать", "писать", "думать", "знать", "видеть", "слушать", "идти", "ехать", "любить",
    "работать", "жить", "спать", "есть", "пить", "играть", "смотреть", "понимать", "помнить",
)

# Prosody: the same sentence as a statement ('.') and as a yes/no question ('?').
PROSODY_SENTENCES = (
    "you are going home", "she likes the music", "the train leaves at nine", "he called his mother",
    "they found the keys", "we are late again", "the shop is open", "it is raining outside",
    "you saw the movie", "the children are asleep", "she bought a new car", "he can swim",
    "the meeting is today", "you have a brother", "the door was locked", "they live in london",
    "the coffee is hot", "we won the game", "you like green tea", "the bus is full",
    "she speaks french", "he lost his phone", "the garden looks nice", "you finished the book",
    "the dog is hungry", "they moved last year", "the lights are on", "you remember the address",
    "the window is broken", "he works at night", "we have enough time", "the river is deep",
    "you want some bread", "she plays the piano", "the letter arrived", "they sold the house",
)
