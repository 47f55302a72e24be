using SensMerging.Abstractions;
using static TorchSharp.torch;

namespace SensMerging.Plugins.Tests;

/// <summary>A scorer catalog over given scorers: defaults from their specs, then the given values.</summary>
internal sealed class TestScorerCatalog(params IScorer[] scorers) : IScorerCatalog
{
    public IScorer Get(string name) =>
        scorers.FirstOrDefault(s => s.Name == name)
        ?? throw new KeyNotFoundException($"no scorer '{name}'; available: {string.Join(", ", scorers.Select(s => s.Name))}");

    public ResolvedParameters ResolveParameters(IScorer scorer, IReadOnlyDictionary<string, object> values) => Resolve(scorer.Parameters, values);

    public static ResolvedParameters Resolve(IReadOnlyList<ParameterSpec> specs, IReadOnlyDictionary<string, object>? values = null)
    {
        var global = new Dictionary<string, object>();
        foreach (var spec in specs)
        {
            if (spec.Default is not null)
            {
                global[spec.Name] = spec.Default;
            }
        }
        foreach (var (k, v) in values ?? new Dictionary<string, object>())
        {
            if (!specs.Any(s => s.Name == k))
            {
                throw new ArgumentException($"unknown parameter '{k}'");
            }
            global[k] = v;
        }
        return new ResolvedParameters(global, []);
    }
}

/// <summary>A scorer returning a fixed table (to drive the decorator with hand-made numbers), counting its runs.</summary>
internal sealed class FixedScorer(string name, ScorerKind kind, Func<IReadOnlyList<ScoredModel>, ScoreTable> table) : IScorer
{
    public int Runs { get; private set; }

    public ResolvedParameters? LastParameters { get; private set; }

    public IReadOnlyList<ScoredModel>? LastModels { get; private set; }

    public string Name => name;

    public string Description => "fixed table";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
        [ParameterSpec.Integer("samples", 100, ParameterScope.Global, "m"), ParameterSpec.Integer("max_length", 256, ParameterScope.Global, "tokens")];

    public ScorerKind Kind => kind;

    public Task<ScoreTable> ScoreAsync(ScoringContext context, CancellationToken cancellationToken)
    {
        Runs++;
        LastParameters = context.Parameters;
        LastModels = context.Models;
        return Task.FromResult(table(context.Models));
    }
}

/// <summary>Scratch tensors owned by the test, disposed with it.</summary>
internal sealed class TestScratch(long[] shape) : ITensorScratch, IDisposable
{
    private readonly List<Tensor> _rented = [];

    public Tensor Rent(ScalarType dtype = ScalarType.Float32) => Rent(shape, dtype);

    public Tensor Rent(long[] shape, ScalarType dtype = ScalarType.Float32)
    {
        var t = empty(shape, dtype);
        _rented.Add(t);
        return t;
    }

    public void Dispose()
    {
        foreach (var t in _rented)
        {
            t.Dispose();
        }
    }
}

/// <summary>Task arithmetic written for the tests: out = base + lambda * sum_i w_i (model_i - base).</summary>
internal sealed class TestTaskArithmetic : IMergeStrategy
{
    public string Name => "task_arithmetic";

    public string Description => "base + lambda * weighted sum of task vectors";

    public IReadOnlyList<ParameterSpec> Parameters { get; } = [ParameterSpec.Float("lambda", 1.0, ParameterScope.Global, "scale")];

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, Elementwise: true);

    public void Merge(MergeTensorRequest request)
    {
        var lambda = request.Parameters.Float("lambda");
        using var delta = request.Scratch.Rent();
        request.Output.zero_();
        for (var i = 0; i < request.Models.Count; i++)
        {
            delta.copy_(request.Models[i]).sub_(request.Base!);
            request.Output.add_(delta, alpha: request.Weights[i]);
        }
        request.Output.mul_(lambda).add_(request.Base!);
    }
}

/// <summary>Records the weights the decorator hands it, then delegates.</summary>
internal sealed class RecordingStrategy(IMergeStrategy inner) : IMergeStrategy
{
    public List<(string Group, double[] Weights)> Calls { get; } = [];

    public string Name => inner.Name;

    public string Description => inner.Description;

    public IReadOnlyList<ParameterSpec> Parameters => inner.Parameters;

    public StrategyTraits Traits => inner.Traits;

    public void Merge(MergeTensorRequest request)
    {
        Calls.Add((request.LayerGroup, request.Weights.ToArray()));
        inner.Merge(request);
    }
}

/// <summary>A temporary folder, deleted on dispose.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "sensmerge-plugins-" + Guid.NewGuid().ToString("N"));

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // best effort
        }
    }
}

internal static class Data
{
    public static readonly string[] Math =
    [
        "two plus three is five.", "nine minus four is five.", "six times seven is forty two.", "ten over two is five.",
        "the sum of one and one is two.", "half of eight is four.", "three squared is nine.", "twelve minus five is seven.",
    ];

    public static readonly string[] Code =
    [
        "return x plus one.", "for i in range ten, print i.", "if x is none, raise an error.", "def add a, b return a plus b.",
        "while true, break.", "import numpy as np.", "class point has x and y.", "print hello world.",
    ];

    public static readonly string[] Chat =
    [
        "hello, how are you?", "i am fine, thank you!", "what a nice day it is.", "could you help me, please?",
        "the weather is warm today.", "let's meet at noon.", "thanks for the kind words.", "see you soon!",
    ];

    public static TextDataset Set(string task, IEnumerable<string> texts, int maxLength = 64) =>
        new(task, $"/calibration/{task}.jsonl", texts.Select(t => new TextSample(t)).ToArray(), maxLength);
}

/// <summary>Equality within an absolute tolerance, for comparing arrays of doubles.</summary>
internal sealed class Tolerance(double tolerance) : IEqualityComparer<double>
{
    public bool Equals(double x, double y) => Math.Abs(x - y) <= tolerance;

    public int GetHashCode(double obj) => 0;
}
