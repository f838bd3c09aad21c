#!/usr/bin/env python3
"""Generates flow's German demo corpus (written for this project, not copied).

Writes, next to this script:
  fineweb2-demo.jsonl     documents in FineWeb-2's schema, ~40% medical
  fineweb2-demo.parquet   the same rows as parquet (needs pyarrow)
  labels.csv              human-style labels of a subset by 3 annotators

Every sentence is assembled from the templates and vocabulary below with a
fixed seed, so the output is reproducible. Some documents are exact or near
duplicates on purpose (for `dedup`), and a few are borderline (sports
injuries, health politics) where the simulated annotators disagree.

Venv: python3 -m venv venv && venv/bin/pip install pyarrow
Run:  venv/bin/python data/demo/make_demo.py
"""
import csv
import json
import os
import random
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(20240611)

MED = {
    "krankheit": ["Diabetes mellitus Typ 2", "Bluthochdruck", "Asthma bronchiale", "Migräne", "Herzinsuffizienz",
                  "chronische Niereninsuffizienz", "Lungenentzündung", "Gürtelrose", "Schilddrüsenunterfunktion",
                  "Vorhofflimmern", "Morbus Crohn", "Osteoporose", "Rheumatoide Arthritis", "Borreliose"],
    "symptom": ["Kopfschmerzen", "Atemnot", "Fieber", "Schwindel", "Übelkeit", "Brustschmerzen", "Müdigkeit",
                "Gelenkschmerzen", "Herzrasen", "Hautausschlag", "Husten", "Taubheitsgefühle"],
    "medikament": ["Metformin", "Ibuprofen", "Ramipril", "Salbutamol", "Levothyroxin", "Amoxicillin", "Apixaban",
                   "Bisoprolol", "Prednisolon", "Paracetamol", "Methotrexat", "Sumatriptan"],
    "organ": ["Leber", "Niere", "Herz", "Lunge", "Bauchspeicheldrüse", "Schilddrüse", "Magen", "Darm", "Gehirn"],
    "fach": ["Kardiologie", "Neurologie", "Innere Medizin", "Pneumologie", "Dermatologie", "Rheumatologie",
             "Endokrinologie", "Gastroenterologie"],
    "untersuchung": ["Blutbild", "EKG", "Ultraschalluntersuchung", "MRT", "Lungenfunktionstest", "Biopsie",
                     "Langzeit-Blutdruckmessung", "Darmspiegelung"],
    "ort": ["Universitätsklinikum", "Kreiskrankenhaus", "Hausarztpraxis", "Notaufnahme", "Rehaklinik"],
}
MED_SENTENCES = [
    "Bei {krankheit} berichten viele Betroffene zunächst über {symptom} und {symptom2}.",
    "Die Diagnose wird meist durch ein {untersuchung} gesichert, ergänzt durch ein {untersuchung2}.",
    "Als Mittel der ersten Wahl gilt {medikament}; die Dosis wird schrittweise angepasst.",
    "Zu den häufigen Nebenwirkungen von {medikament} zählen {symptom} und in seltenen Fällen Veränderungen der {organ}.",
    "Die {organ} spielt bei {krankheit} eine zentrale Rolle, weil dort wichtige Stoffwechselprozesse ablaufen.",
    "Patientinnen und Patienten mit {symptom} sollten ärztlich abklären lassen, ob eine {krankheit} vorliegt.",
    "Die Fachgesellschaft für {fach} empfiehlt, {medikament} nicht ohne Rücksprache abzusetzen.",
    "Im {ort} wurde eine neue Station für {fach} eröffnet, die jährlich rund {zahl} Menschen behandeln soll.",
    "Wechselwirkungen zwischen {medikament} und {medikament2} können die Wirkung deutlich verstärken.",
    "Eine Studie mit {zahl} Teilnehmenden zeigte, dass regelmäßige Bewegung das Risiko für {krankheit} senkt.",
    "Bei anhaltendem {symptom} ist eine Überweisung in die {fach} sinnvoll.",
    "Die Pharmakokinetik von {medikament} hängt stark von der Funktion der {organ} ab.",
    "Nach der Behandlung im {ort} folgt häufig eine mehrwöchige Rehabilitation.",
    "Typische Warnzeichen einer {krankheit} sind {symptom}, {symptom2} und ein allgemeines Krankheitsgefühl.",
    "Die Halbwertszeit von {medikament} beträgt etwa {stunden} Stunden, deshalb wird es {mal} täglich eingenommen.",
]
MED_TITLES = ["Was hilft bei {krankheit}?", "{krankheit}: Ursachen, Symptome und Therapie",
              "Neues aus dem {ort}", "{medikament} richtig einnehmen", "Wenn {symptom} nicht vergeht"]

NON = {
    "verein": ["FC Bergheim", "TSV Lindenau", "SV Rotweiß", "Eintracht Oberdorf", "SC Seeblick"],
    "sportart": ["Handball", "Fußball", "Volleyball", "Eishockey", "Tischtennis", "Basketball"],
    "gericht": ["Käsespätzle", "Rinderrouladen", "Flammkuchen", "Apfelstrudel", "Linseneintopf", "Kartoffelsalat"],
    "zutat": ["Zwiebeln", "Butter", "Sahne", "Mehl", "Speck", "Äpfel", "Petersilie", "Bergkäse"],
    "stadt": ["Hamburg", "Leipzig", "Freiburg", "Rostock", "Regensburg", "Kassel", "Trier", "Lübeck"],
    "region": ["Schwarzwald", "Allgäu", "Ostseeküste", "Sächsische Schweiz", "Mosel", "Spreewald"],
    "geraet": ["Smartphone", "Laptop", "Router", "Smartwatch", "E-Book-Reader", "Saugroboter"],
    "firma": ["Nordtech", "Datenwerk", "Lichtblick Systems", "Kreisel Software", "Brückner Elektronik"],
    "partei": ["die Regierungsfraktion", "die Opposition", "der Stadtrat", "der Landtag", "der Bundesrat"],
    "thema": ["den Nahverkehr", "die Grundsteuer", "den Wohnungsbau", "die Digitalisierung der Schulen",
              "den Ausbau der Radwege", "die Energiepreise"],
}
NON_SENTENCES = [
    "Der {verein} gewann am Wochenende im {sportart} mit {zahl} zu {zahl2} gegen den Tabellenführer.",
    "Der Trainer lobte nach dem Spiel die Abwehr und kündigte Änderungen für die Rückrunde an.",
    "Für {gericht} braucht man vor allem {zutat}, {zutat2} und etwas Geduld beim Anbraten.",
    "Das Rezept für {gericht} stammt aus der Familie und wird seit Generationen weitergegeben.",
    "Eine Reise an die {region} lohnt sich besonders im Frühjahr, wenn die Wege noch ruhig sind.",
    "In {stadt} eröffnete ein neues Museum, das die Geschichte des Hafens zeigt.",
    "Das neue {geraet} von {firma} bietet einen schnelleren Prozessor und eine längere Akkulaufzeit.",
    "Ein Update für das {geraet} behebt mehrere Sicherheitslücken und verbessert die Bedienung.",
    "{partei_cap} debattierte stundenlang über {thema}, ohne eine Einigung zu erzielen.",
    "Nach Angaben der Verwaltung sollen bis {jahr} rund {zahl} Millionen Euro in {thema} fließen.",
    "Die Wanderroute durch die {region} führt über {zahl} Kilometer an Burgen und Weinbergen vorbei.",
    "Im Test überzeugte das {geraet} mit einem hellen Display, schwächelte aber bei der Kamera.",
    "Die Zuschauer in {stadt} feierten den {verein} bis spät in die Nacht.",
    "Wer {gericht} zubereitet, sollte die {zutat} zuerst in {zutat2} glasig dünsten.",
    "Bürgerinnen und Bürger in {stadt} können ihre Vorschläge zu {thema} online einreichen.",
]
NON_TITLES = ["{verein} siegt deutlich", "Rezept: {gericht} wie bei Oma", "Unterwegs in der {region}",
              "{firma} stellt neues {geraet} vor", "Streit um {thema} in {stadt}"]

# Borderline: sport or politics with a health angle; annotators disagree.
BORDER_SENTENCES = [
    "Der Kapitän des {verein} fällt nach einem Kreuzbandriss mehrere Monate aus.",
    "Die Mannschaftsärztin rechnet mit einer Operation und anschließender Physiotherapie.",
    "{partei_cap} stritt über die Finanzierung der Krankenhäuser und die Pflegepersonaluntergrenzen.",
    "Die Krankenkassen warnen vor steigenden Beiträgen im kommenden Jahr.",
    "Viele Hobbysportler unterschätzen das Aufwärmen und riskieren Zerrungen.",
]


def fill(template, vocab):
    out = template
    # numbered duplicates like {symptom2} draw a different word of the same kind
    for key in sorted(vocab, key=len, reverse=True):
        for suffix in ("2", ""):
            ph = "{" + key + suffix + "}"
            while ph in out:
                out = out.replace(ph, rng.choice(vocab[key]), 1)
    out = out.replace("{zahl}", str(rng.randint(2, 900))).replace("{zahl2}", str(rng.randint(0, 40)))
    out = out.replace("{stunden}", str(rng.randint(2, 36))).replace("{mal}", rng.choice(["einmal", "zweimal", "dreimal"]))
    out = out.replace("{jahr}", str(rng.randint(2026, 2035)))
    if "{partei_cap}" in out:
        p = rng.choice(vocab.get("partei", NON["partei"]))
        out = out.replace("{partei_cap}", p[0].upper() + p[1:])
    return out


def document(kind):
    if kind == "med":
        title, sents, vocab = rng.choice(MED_TITLES), MED_SENTENCES, MED
    elif kind == "non":
        title, sents, vocab = rng.choice(NON_TITLES), NON_SENTENCES, NON
    else:
        title, vocab = rng.choice(NON_TITLES), {**NON, **MED}
        sents = BORDER_SENTENCES + rng.sample(NON_SENTENCES, 4)
    paragraphs = []
    for _ in range(rng.randint(2, 4)):
        chosen = rng.sample(sents, rng.randint(3, 5))
        paragraphs.append(" ".join(fill(s, vocab) for s in chosen))
    return fill(title, vocab) + "\n\n" + "\n\n".join(paragraphs)


def row(text, i):
    host = rng.choice(["gesundheit-aktuell.de", "praxis-ratgeber.de", "lokalnachrichten.de", "reiseblog.de",
                       "technik-test.de", "kochen-zuhause.de", "sport-regional.de"])
    score = round(rng.uniform(0.93, 1.0), 4)
    return {
        "text": text,
        "id": f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>",
        "dump": rng.choice(["CC-MAIN-2023-50", "CC-MAIN-2024-10", "CC-MAIN-2024-18"]),
        "url": f"https://www.{host}/artikel/{i:05d}",
        "date": f"2024-0{rng.randint(1, 9)}-{rng.randint(10, 28)}T{rng.randint(10, 23)}:00:00Z",
        "file_path": f"s3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/{rng.randint(1000, 9999)}/warc/part-{i:05d}.warc.gz",
        "language": "deu",
        "language_score": score,
        "language_script": "Latn",
        "minhash_cluster_size": rng.randint(1, 5),
        "top_langs": json.dumps({"deu_Latn_score": score}),
    }


def main():
    kinds = ["med"] * 124 + ["non"] * 170 + ["border"] * 16
    rng.shuffle(kinds)
    rows, truth = [], []
    for i, k in enumerate(kinds):
        rows.append(row(document(k), i))
        truth.append(k)
    # exact duplicates (same text, new id/url) and near duplicates (one sentence changed)
    for j in range(12):
        src = rows[j * 7]
        dup = row(src["text"], len(rows))
        rows.append(dup)
        truth.append(truth[j * 7])
    for j in range(12):
        src = rows[j * 11 + 3]
        words = src["text"].split(" ")
        pos = len(words) // 2
        words[pos] = words[pos] + ","
        near = row(" ".join(words) + " Mehr dazu in Kürze.", len(rows))
        rows.append(near)
        truth.append(truth[j * 11 + 3])

    with open(os.path.join(HERE, "fineweb2-demo.jsonl"), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    # Labels for 72 documents by 3 annotators: they agree on clear cases with
    # occasional slips; borderline documents split them.
    labelled = [i for i in range(len(kinds)) if kinds[i] == "border"][:10]
    labelled += [i for i in range(len(kinds)) if kinds[i] != "border"][:62]
    with open(os.path.join(HERE, "labels.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "annotator", "label"])
        for i in sorted(labelled):
            for ann, slip, border_med in (("anna", 0.03, 0.7), ("ben", 0.06, 0.4), ("clara", 0.04, 0.5)):
                if kinds[i] == "border":
                    med = rng.random() < border_med
                else:
                    med = kinds[i] == "med"
                    if rng.random() < slip:
                        med = not med
                w.writerow([rows[i]["id"], ann, "medizinisch" if med else "allgemein"])

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        print("pyarrow missing: parquet not written (pip install pyarrow)")
        return
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, os.path.join(HERE, "fineweb2-demo.parquet"), compression="snappy")
    print(f"{len(rows)} documents, {sum(1 for k in truth if k == 'med')} medical")


if __name__ == "__main__":
    main()
