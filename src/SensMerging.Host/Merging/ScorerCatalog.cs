using SensMerging.Abstractions;
using SensMerging.Core.Config;
using SensMerging.Host.Plugins;

namespace SensMerging.Host.Merging;

/// <summary>Scorer plugins by name for decorators, with parameters resolved against each scorer's declared specs.</summary>
public sealed class ScorerCatalog : IScorerCatalog
{
    private readonly PluginCatalog _plugins;
    private readonly ScoreCache? _cache;
    private readonly List<string> _used = [];
    private readonly List<ScoreTable> _tables = [];

    /// <param name="plugins">Where scorers come from.</param>
    /// <param name="cache">Scores shared across merges of this process (null: always score).</param>
    public ScorerCatalog(PluginCatalog plugins, ScoreCache? cache = null)
    {
        _plugins = plugins;
        _cache = cache;
    }

    /// <summary>The scorers handed out so far (for provenance).</summary>
    public IReadOnlyList<string> Used => _used;

    /// <summary>The tables the handed-out scorers returned, in the order they finished (for provenance).</summary>
    public IReadOnlyList<ScoreTable> Tables
    {
        get
        {
            lock (_tables)
            {
                return [.. _tables];
            }
        }
    }

    public IScorer Get(string name)
    {
        var scorer = _plugins.GetScorer(name);
        if (!_used.Contains(name))
        {
            _used.Add(name);
        }
        return new RecordingScorer(_cache is null ? scorer : new CachingScorer(scorer, _cache), this);
    }

    private void Add(ScoreTable table)
    {
        lock (_tables)
        {
            _tables.Add(table);
        }
    }

    /// <summary>A scorer whose tables the catalog keeps, so the registry records what the scorers returned.</summary>
    private sealed class RecordingScorer(IScorer inner, ScorerCatalog catalog) : IScorer
    {
        public string Name => inner.Name;

        public string Description => inner.Description;

        public IReadOnlyList<ParameterSpec> Parameters => inner.Parameters;

        public ScorerKind Kind => inner.Kind;

        public async Task<ScoreTable> ScoreAsync(ScoringContext context, CancellationToken cancellationToken)
        {
            var table = await inner.ScoreAsync(context, cancellationToken).ConfigureAwait(false);
            catalog.Add(table);
            return table;
        }
    }

    public ResolvedParameters ResolveParameters(IScorer scorer, IReadOnlyDictionary<string, object> values)
    {
        ArgumentNullException.ThrowIfNull(scorer);
        ArgumentNullException.ThrowIfNull(values);
        // Decorators pass their own settings through; keep only what the scorer declares.
        var declared = scorer.Parameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        var own = values.Where(kv => declared.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        return ParameterResolver.ResolveComponent(scorer.Name, own, scorer.Parameters);
    }
}
