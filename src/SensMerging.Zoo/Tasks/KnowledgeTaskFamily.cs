using System.Text;
using SensMerging.Abstractions;

namespace SensMerging.Zoo.Tasks;

/// <summary>One fact of the synthetic table: <c>Relation(Country) = Value</c>.</summary>
public sealed record Fact(string Country, string Relation, string Value);

/// <summary>
/// Questions over a synthetic fact table generated from the seed: made-up countries with a capital, a main export
/// and an animal. Every fact is asked in several phrasings; for the held-out set one phrasing of a fact is
/// kept out of training (the fact itself is trained in its other phrasings), and for the development set another one. The base model sees the facts of a
/// quarter of the countries only as questions, and every fact as declarative statements in its pre-training corpus
/// ("The capital of X is Y."); the expert learns to answer questions about all of them. The table fixes the training set's size, so
/// <see cref="TaskDataSizes.Train"/> is not used; the held-out and development sets have at most one sample per fact each.
/// </summary>
public sealed class KnowledgeTaskFamily : ITaskFamily
{
    public const string TaskName = "knowledge";

    private static readonly string[] Onsets = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "gr", "kr", "tr", "st", "th"];
    private static readonly string[] Vowels = ["a", "e", "i", "o", "u", "ai", "ou"];
    private static readonly string[] Endings = ["ia", "or", "and", "ista", "ene", "ary"];
    private static readonly string[] Exports = ["tea", "salt", "iron", "wool", "gold", "rice", "silk", "figs", "glass", "coal", "corn", "wine"];
    private static readonly string[] Animals = ["owl", "fox", "bear", "wolf", "hare", "lynx", "seal", "crow", "deer", "yak", "frog", "swan"];

    /// <summary>Relation name and the noun phrase that asks for it.</summary>
    private static readonly (string Relation, string Phrase)[] Relations =
    [
        ("capital", "the capital of"),
        ("export", "the export of"),
        ("animal", "the animal of"),
    ];

    /// <summary>Declarative phrasings of a fact (relation, country, value): the pre-training corpus's form.</summary>
    private static readonly string[] Statements = ["The {0} of {1} is {2}.", "{1}'s {0} is {2}.", "In {1}, the {0} is {2}."];

    /// <summary>Question phrasings around "the capital of X".</summary>
    private static readonly string[] Phrasings = ["What is {0}?", "Name {0}.", "Tell me {0}.", "Quiz: {0}?"];

    /// <param name="countries">Countries in the table (three facts each).</param>
    /// <param name="baseShare">Share of the countries whose facts the base model sees.</param>
    public KnowledgeTaskFamily(int countries = 40, double baseShare = 0.25)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(countries, 2);
        if (baseShare is < 0 or > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(baseShare), baseShare, "The base share must be between 0 and 1.");
        }
        Countries = countries;
        BaseShare = baseShare;
    }

    public int Countries { get; }

    public double BaseShare { get; }

    public string Name => TaskName;

    public string Description => "Questions over a fixed synthetic fact table (capital, export and animal of made-up countries).";

    /// <summary>The fact table of <paramref name="seed"/>, countries in generation order.</summary>
    public IReadOnlyList<Fact> FactTable(int seed)
    {
        var random = new Random(SeedMixer.Derive(seed, Name + "/facts"));
        var names = new HashSet<string>(StringComparer.Ordinal);
        var facts = new List<Fact>(Countries * Relations.Length);
        while (names.Count < Countries)
        {
            var country = Capitalize(Syllable(random) + Syllable(random) + Endings[random.Next(Endings.Length)]);
            if (country.Length > 12 || !names.Add(country))
            {
                continue;
            }
            var capital = Capitalize(Syllable(random) + Syllable(random));
            facts.Add(new Fact(country, "capital", capital));
            facts.Add(new Fact(country, "export", Exports[random.Next(Exports.Length)]));
            facts.Add(new Fact(country, "animal", Animals[random.Next(Animals.Length)]));
        }
        return facts;
    }

    /// <summary>The question text of <paramref name="fact"/> in phrasing <paramref name="phrasing"/> (0..3).</summary>
    public static TextSample Question(Fact fact, int phrasing)
    {
        ArgumentNullException.ThrowIfNull(fact);
        var phrase = Relations.First(r => r.Relation == fact.Relation).Phrase;
        var question = string.Format(System.Globalization.CultureInfo.InvariantCulture, Phrasings[phrasing], phrase + " " + fact.Country);
        return new TextSample(question + "\nA: ", fact.Value);
    }

    public TaskSplits Generate(int seed, TaskDataSizes sizes)
    {
        ArgumentNullException.ThrowIfNull(sizes);
        sizes.Validate();
        var facts = FactTable(seed);
        var random = new Random(SeedMixer.Derive(seed, Name + "/split"));
        var countries = facts.Select(f => f.Country).Distinct().ToList();
        var baseCountries = SeedMixer.Shuffled(countries, random)
            .Take((int)Math.Round(countries.Count * BaseShare))
            .ToHashSet(StringComparer.Ordinal);

        // Hold out one phrasing for each of the first `Eval` facts (in a shuffled order).
        var heldOutList = SeedMixer.Shuffled(facts, random)
            .Take(Math.Min(sizes.Eval, facts.Count))
            .Select(f => (Fact: f, Phrasing: random.Next(Phrasings.Length)))
            .ToList();
        var heldOut = heldOutList.ToDictionary(h => h.Fact, h => h.Phrasing);
        // The development set holds out a second phrasing (never the evaluation one) of the first `Dev` facts of another order.
        var devList = SeedMixer.Shuffled(facts, random)
            .Take(Math.Min(sizes.Dev, facts.Count))
            .Select(f => (Fact: f, Phrasing: OtherPhrasing(random, heldOut.TryGetValue(f, out var e) ? e : -1)))
            .ToList();
        var dev = devList.ToDictionary(h => h.Fact, h => h.Phrasing);
        var train = new List<TextSample>();
        var baseTrain = new List<TextSample>();
        foreach (var fact in facts)
        {
            for (var p = 0; p < Phrasings.Length; p++)
            {
                if ((heldOut.TryGetValue(fact, out var held) && held == p) || (dev.TryGetValue(fact, out var developed) && developed == p))
                {
                    continue;
                }
                var sample = Question(fact, p);
                train.Add(sample);
                if (baseCountries.Contains(fact.Country))
                {
                    baseTrain.Add(sample);
                }
            }
        }
        var eval = heldOutList.Select(h => Question(h.Fact, h.Phrasing)).ToList();
        var calibration = SeedMixer.Shuffled(train, new Random(SeedMixer.Derive(seed, Name + "/calibration")))
            .Take(sizes.Calibration)
            .ToList();
        // The pre-training corpus states every fact (all countries) in declarative form, never as a question.
        var pretraining = facts.SelectMany(f => Enumerable.Range(0, Statements.Length).Select(p => Statement(f, p))).ToList();
        return new TaskSplits(Name, train, baseTrain, eval, calibration, devList.Select(h => Question(h.Fact, h.Phrasing)).ToList(), pretraining);
    }

    /// <summary>The declarative statement of <paramref name="fact"/> in phrasing <paramref name="phrasing"/> (0..2), as plain text.</summary>
    public static TextSample Statement(Fact fact, int phrasing)
    {
        ArgumentNullException.ThrowIfNull(fact);
        return new TextSample(string.Format(System.Globalization.CultureInfo.InvariantCulture, Statements[phrasing], fact.Relation, fact.Country, fact.Value), null);
    }

    private static int OtherPhrasing(Random random, int excluded)
    {
        var phrasing = random.Next(excluded < 0 ? Phrasings.Length : Phrasings.Length - 1);
        return excluded >= 0 && phrasing >= excluded ? phrasing + 1 : phrasing;
    }

    private static string Syllable(Random random) => Onsets[random.Next(Onsets.Length)] + Vowels[random.Next(Vowels.Length)];

    private static string Capitalize(string text)
    {
        var builder = new StringBuilder(text);
        builder[0] = char.ToUpperInvariant(builder[0]);
        return builder.ToString();
    }
}
