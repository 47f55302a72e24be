using SensMerging.Abstractions;

namespace SensMerging.Zoo.Tasks;

/// <summary>One generated sample and whether it belongs to the part of the task the base model sees.</summary>
/// <param name="Sample">The prompt and its response.</param>
/// <param name="InBaseSubset">True for the templates the base model is trained on.</param>
public readonly record struct DrawnSample(TextSample Sample, bool InBaseSubset);

/// <summary>
/// A family whose samples come from random templates over a large space: the evaluation prompts are drawn first,
/// then training prompts that differ from every evaluation prompt.
/// </summary>
public abstract class TemplatedTaskFamily : ITaskFamily
{
    private const int AttemptsPerSample = 40;

    public abstract string Name { get; }

    public abstract string Description { get; }

    /// <summary>
    /// Share of the training samples of the templates outside the base subset that the base model sees as well (drawn
    /// per sample with a seeded generator of its own): a pre-training corpus holds a little of every format.
    /// </summary>
    public double BaseFormatShare
    {
        get;
        init
        {
            if (value is < 0 or > 1 || double.IsNaN(value))
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "The base format share must be between 0 and 1.");
            }
            field = value;
        }
    }

    /// <summary>Draws one sample from the family's templates.</summary>
    public abstract DrawnSample Draw(Random random);

    /// <summary>Draws one sample of the family's raw pre-training corpus (the sub-skills without the task's format).</summary>
    public abstract TextSample DrawPretraining(Random random);

    public TaskSplits Generate(int seed, TaskDataSizes sizes)
    {
        ArgumentNullException.ThrowIfNull(sizes);
        sizes.Validate();
        var random = new Random(SeedMixer.Derive(seed, Name));
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var eval = DrawUnique(random, sizes.Eval, seen, "evaluation");
        var train = DrawUnique(random, sizes.Train, seen, "training");
        // Drawn after training so that adding the split left the evaluation and training draws of a seed unchanged.
        var dev = DrawUnique(random, sizes.Dev, seen, "development");
        var pretrainingRandom = new Random(SeedMixer.Derive(seed, Name + "/pretraining"));
        var pretraining = new List<TextSample>(sizes.Pretraining);
        while (pretraining.Count < sizes.Pretraining)
        {
            pretraining.Add(DrawPretraining(pretrainingRandom));
        }
        var calibration = SeedMixer.Shuffled(train, new Random(SeedMixer.Derive(seed, Name + "/calibration")))
            .Take(sizes.Calibration)
            .Select(d => d.Sample)
            .ToList();
        var formatRandom = new Random(SeedMixer.Derive(seed, Name + "/base-format"));
        return new TaskSplits(
            Name,
            train.Select(d => d.Sample).ToList(),
            train.Where(d => formatRandom.NextDouble() < BaseFormatShare || d.InBaseSubset).Select(d => d.Sample).ToList(),
            eval.Select(d => d.Sample).ToList(),
            calibration,
            dev.Select(d => d.Sample).ToList(),
            pretraining);
    }

    private List<DrawnSample> DrawUnique(Random random, int count, HashSet<string> seen, string split)
    {
        var result = new List<DrawnSample>(count);
        var attempts = 0L;
        var limit = (long)count * AttemptsPerSample;
        while (result.Count < count)
        {
            if (++attempts > limit)
            {
                throw new InvalidOperationException(
                    $"Task '{Name}' could not draw {count} distinct {split} samples ({result.Count} found): its template space is too small for the requested size.");
            }
            var drawn = Draw(random);
            if (seen.Add(drawn.Sample.Prompt))
            {
                result.Add(drawn);
            }
        }
        return result;
    }

    /// <summary>The bare equation <c>a op b=</c> with its result as the response (op one of + - *): pre-training corpus form.</summary>
    protected static TextSample Equation(int a, char op, int b)
    {
        var result = op switch
        {
            '+' => a + b,
            '-' => a - b,
            '*' => a * b,
            _ => throw new ArgumentOutOfRangeException(nameof(op), op, "Use +, - or *."),
        };
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        return new TextSample(string.Create(inv, $"{a}{op}{b}="), result.ToString(inv));
    }

    /// <summary>One element of <paramref name="items"/>, uniformly.</summary>
    protected static T Pick<T>(Random random, IReadOnlyList<T> items)
    {
        ArgumentNullException.ThrowIfNull(random);
        ArgumentNullException.ThrowIfNull(items);
        return items[random.Next(items.Count)];
    }
}
