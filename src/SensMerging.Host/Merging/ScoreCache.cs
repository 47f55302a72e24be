using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using SensMerging.Abstractions;

namespace SensMerging.Host.Merging;

/// <summary>
/// Scores already computed in this process, keyed by everything a scorer reads: its name and parameters, the models
/// (name, folder) and their data (file, sample count, length), and the device. Several merges over the same experts
/// (the demo runs nine sens merges) score once.
/// </summary>
public sealed class ScoreCache
{
    private readonly ConcurrentDictionary<string, Lazy<Task<ScoreTable>>> _tables = new(StringComparer.Ordinal);

    public Task<ScoreTable> GetOrAddAsync(IScorer scorer, ScoringContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(scorer);
        ArgumentNullException.ThrowIfNull(context);
        var key = Key(scorer, context);
        var lazy = _tables.GetOrAdd(key, _ => new Lazy<Task<ScoreTable>>(() => scorer.ScoreAsync(context, cancellationToken)));
        var task = lazy.Value;
        // Never keep a failure: a later call scores again.
        _ = task.ContinueWith(
            _ => _tables.TryRemove(new KeyValuePair<string, Lazy<Task<ScoreTable>>>(key, lazy)),
            CancellationToken.None, TaskContinuationOptions.NotOnRanToCompletion, TaskScheduler.Default);
        return task;
    }

    private static string Key(IScorer scorer, ScoringContext context)
    {
        var sb = new StringBuilder(scorer.Name).Append('|').Append(context.Device);
        foreach (var (name, value) in context.Parameters.Global.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            sb.Append('|').Append(name).Append('=').Append(Convert.ToString(value, CultureInfo.InvariantCulture));
        }
        foreach (var model in context.Models)
        {
            sb.Append("|m:").Append(model.Name).Append('@').Append(model.ModelPath);
            if (model.Data is { } data)
            {
                sb.Append(CultureInfo.InvariantCulture, $"#{data.SourcePath}:{data.Samples.Count}:{data.MaxLength}");
            }
        }
        return sb.ToString();
    }
}

/// <summary>A scorer whose results come from a <see cref="ScoreCache"/> when the same inputs were scored before.</summary>
internal sealed class CachingScorer : IScorer
{
    private readonly IScorer _inner;
    private readonly ScoreCache _cache;

    public CachingScorer(IScorer inner, ScoreCache cache)
    {
        _inner = inner;
        _cache = cache;
    }

    public string Name => _inner.Name;

    public string Description => _inner.Description;

    public IReadOnlyList<ParameterSpec> Parameters => _inner.Parameters;

    public ScorerKind Kind => _inner.Kind;

    public Task<ScoreTable> ScoreAsync(ScoringContext context, CancellationToken cancellationToken) =>
        _cache.GetOrAddAsync(_inner, context, cancellationToken);
}
