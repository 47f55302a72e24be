using System.Text.Json;
using LiteDB;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Registry.Lifecycle;
using SensMerging.Registry.Storage;

namespace SensMerging.Registry;

/// <summary>
/// The registry on an embedded LiteDB 5 file. Opened in LiteDB shared mode by default, so a merge and <c>serve</c>
/// (or two merges) use the file at once; every write of a record (full record and its indexed summary) is one
/// transaction under LiteDB's inter-process mutex. The file is checked before LiteDB touches it: a file that is not
/// a LiteDB database, or is damaged, raises <see cref="RegistryCorruptException"/> and is left as it was.
/// </summary>
public sealed partial class LiteDbMergeRegistry : IMergeRegistry, IDisposable
{
    /// <summary>The schema version this build writes (see docs/registry.md, "Schema versions").</summary>
    public const int CurrentSchemaVersion = 3;

    private const int LineageDepthLimit = 8;

    /// <summary>Pages that start this deep are answered from the in-process summary index (walking to them reads as much).</summary>
    private const int IndexedOffset = 500;

    private readonly LiteDatabase _db;

    // Reads go through a read-only connection: LiteDB flags a file it finds damaged by writing to its header, and a
    // read-only engine cannot, so listing or showing a damaged registry reports the damage without changing the file.
    private readonly LiteDatabase _reader;
    private readonly RegistryOptions _options;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private SummaryIndex? _index;
    private bool _disposed;

    private LiteDbMergeRegistry(string filePath, LiteDatabase db, LiteDatabase reader, RegistryOptions options, ILogger logger)
    {
        FilePath = filePath;
        _db = db;
        _reader = reader;
        _options = options;
        _logger = logger;
    }

    public string FilePath { get; }

    /// <summary>The schema version found in the file when it was opened (before migrations; 0 for a new file).</summary>
    public int OpenedSchemaVersion { get; private set; }

    /// <summary>Opens (creating when absent) the registry at <paramref name="path"/> with default options.</summary>
    public static LiteDbMergeRegistry Open(string path, ILogger<LiteDbMergeRegistry>? logger = null) =>
        Open(new RegistryOptions { Path = path }, logger);

    /// <summary>
    /// Opens the registry: checks the file, creates its folder (and the file) when missing, refuses a newer schema,
    /// runs migrations from an older one, and marks records of ended processes failed.
    /// </summary>
    public static LiteDbMergeRegistry Open(RegistryOptions options, ILogger<LiteDbMergeRegistry>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrWhiteSpace(options.Path);
        var log = (ILogger?)logger ?? NullLogger.Instance;
        var path = Path.GetFullPath(options.Path);
        if (Directory.Exists(path))
        {
            throw new RegistryCorruptException(path, "it is a folder, not a file");
        }
        CheckFile(path);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);

        var connection = new ConnectionString
        {
            Filename = path,
            Connection = options.Connection == RegistryConnection.Shared ? ConnectionType.Shared : ConnectionType.Direct,
            Upgrade = false,
            AutoRebuild = false,
        };
        var exists = File.Exists(path);
        LiteDatabase db;
        try
        {
            db = new LiteDatabase(connection);
            if (!exists)
            {
                // Create the file (header page) so that the read-only connection can open it.
                db.Checkpoint();
            }
        }
        catch (Exception ex) when (IsStorageFault(ex))
        {
            throw new RegistryCorruptException(path, "LiteDB cannot open it: " + ex.Message, ex);
        }
        var reader = options.Connection == RegistryConnection.Shared
            ? new LiteDatabase(new ConnectionString
            {
                Filename = path,
                Connection = ConnectionType.Shared,
                ReadOnly = true,
                Upgrade = false,
                AutoRebuild = false,
            })
            : db;
        var registry = new LiteDbMergeRegistry(path, db, reader, options, log);
        try
        {
            registry.PrepareSchema();
            if (options.MarkAbandoned)
            {
                registry.MarkAbandoned();
            }
            return registry;
        }
        catch
        {
            registry.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            if (!ReferenceEquals(_reader, _db))
            {
                _reader.Dispose();
            }
            _db.Dispose();
        }
    }

    public Task<MergeRecord> BeginAsync(MergeRecord draft, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(draft);
        cancellationToken.ThrowIfCancellationRequested();
        MergeRecordRules.ValidateContent(draft);
        var now = DateTime.UtcNow;
        var record = draft with
        {
            Status = MergeStatus.Running,
            CreatedAt = draft.CreatedAt == default ? now : draft.CreatedAt.ToUniversalTime(),
            StartedAt = draft.StartedAt == default ? now : draft.StartedAt.ToUniversalTime(),
            FinishedAt = null,
            Error = null,
            Outputs = null,
            Owner = ProcessLiveness.Current,
        };
        var explicitId = !string.IsNullOrEmpty(draft.Id);
        if (explicitId)
        {
            MergeIds.Validate(draft.Id);
        }
        for (var attempt = 0; ; attempt++)
        {
            var candidate = explicitId ? record : record with { Id = MergeIds.New(record.CreatedAt) };
            var inserted = Locked("begin a merge record", () =>
                InTransaction(() =>
                {
                    var records = _db.GetCollection(Migrations.RecordCollection);
                    if (records.FindById(candidate.Id) is not null)
                    {
                        return false;
                    }
                    RecordDocuments.Store(_db, candidate, insert: true);
                    return true;
                }));
            if (inserted)
            {
                LogBegun(_logger, candidate.Id, MergeSummary.MethodName(candidate));
                return Task.FromResult(candidate);
            }
            if (explicitId)
            {
                throw new ArgumentException($"a merge with id '{candidate.Id}' is already in the registry", nameof(draft));
            }
            if (attempt >= 10)
            {
                throw new InvalidOperationException("could not find a free merge id after 10 attempts");
            }
        }
    }

    /// <summary>
    /// Adds finished records as they are (for example exported from another registry), in one transaction. Each needs
    /// an id not yet present and a final status. Returns how many were added.
    /// </summary>
    public Task<int> ImportAsync(IReadOnlyList<MergeRecord> records, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(records);
        foreach (var r in records)
        {
            cancellationToken.ThrowIfCancellationRequested();
            MergeIds.Validate(r.Id);
            if (r.Status == MergeStatus.Running)
            {
                throw new ArgumentException($"record '{r.Id}' is running; only finished records can be imported", nameof(records));
            }
            MergeRecordRules.ValidateContent(r);
        }
        return Task.FromResult(Locked("import merge records", () => InTransaction(() =>
        {
            var recordCollection = _db.GetCollection(Migrations.RecordCollection);
            foreach (var r in records)
            {
                if (recordCollection.FindById(r.Id) is not null)
                {
                    throw new ArgumentException($"a merge with id '{r.Id}' is already in the registry", nameof(records));
                }
                RecordDocuments.Store(_db, r, insert: true);
            }
            return records.Count;
        })));
    }

    public Task<MergeRecord> UpdateAsync(string id, Func<MergeRecord, MergeRecord> update, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(update);
        cancellationToken.ThrowIfCancellationRequested();
        return Task.FromResult(Modify(id, "update", current =>
        {
            var changed = update(current) ?? throw new InvalidOperationException("the update returned null");
            if (!string.Equals(changed.Id, current.Id, StringComparison.Ordinal)
                || changed.Status != current.Status
                || changed.Owner != current.Owner
                || changed.Outputs != current.Outputs)
            {
                throw new InvalidOperationException(
                    $"an update of merge '{current.Id}' may not change its id, status, owner or outputs; use CompleteAsync, FailAsync or CancelAsync");
            }
            MergeRecordRules.ValidateContent(changed);
            return changed;
        }));
    }

    public Task<MergeRecord> CompleteAsync(string id, MergeOutputs outputs, IReadOnlyDictionary<string, double>? durations = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(outputs);
        cancellationToken.ThrowIfCancellationRequested();
        var checkedOutputs = MergeRecordRules.CheckOutputs(outputs, _options.VerifyOutputFiles, cancellationToken);
        var record = Modify(id, "complete", current =>
        {
            MergeRecordRules.RequireRunning(current, "complete");
            var finished = DateTime.UtcNow;
            return current with
            {
                Status = MergeStatus.Succeeded,
                FinishedAt = finished,
                Outputs = checkedOutputs,
                Durations = MergeRecordRules.MergeDurations(current, durations, finished),
            };
        });
        LogFinished(_logger, record.Id, record.Status, record.Outputs?.Folder ?? string.Empty);
        return Task.FromResult(record);
    }

    public Task<MergeRecord> FailAsync(string id, Exception exception, IReadOnlyDictionary<string, double>? durations = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(exception);
        var status = exception is OperationCanceledException ? MergeStatus.Cancelled : MergeStatus.Failed;
        return Task.FromResult(Finish(id, status, MergeError.From(exception), durations));
    }

    public Task<MergeRecord> CancelAsync(string id, string? reason = null, IReadOnlyDictionary<string, double>? durations = null, CancellationToken cancellationToken = default) =>
        Task.FromResult(Finish(id, MergeStatus.Cancelled, new MergeError(typeof(OperationCanceledException).FullName!, reason ?? "the merge was cancelled"), durations));

    public Task<IReadOnlyList<string>> MarkAbandonedAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return Task.FromResult(MarkAbandoned());
    }

    public async Task<string> AddEvaluationAsync(string idOrModelRef, EvaluationResult evaluation, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(idOrModelRef);
        ArgumentNullException.ThrowIfNull(evaluation);
        ArgumentException.ThrowIfNullOrWhiteSpace(evaluation.Task);
        ArgumentException.ThrowIfNullOrWhiteSpace(evaluation.Metric);
        var target = await GetAsync(idOrModelRef, cancellationToken).ConfigureAwait(false);
        string id;
        if (target is not null)
        {
            id = target.Id;
        }
        else
        {
            var producers = FindSummaries("outputKeys", ModelKeys.ForQuery(idOrModelRef));
            var producer = producers.Where(s => s.Status == MergeStatus.Succeeded).OrderByDescending(s => s.CreatedAt).FirstOrDefault()
                ?? throw new MergeNotFoundException($"no merge has id '{idOrModelRef}' or produced a model '{idOrModelRef}'", new KeyNotFoundException(idOrModelRef));
            id = producer.Id;
        }
        var stored = evaluation with { RecordedAt = evaluation.RecordedAt == default ? DateTime.UtcNow : evaluation.RecordedAt.ToUniversalTime() };
        Modify(id, "add an evaluation to", r => r with { Evaluations = [.. r.Evaluations, stored] });
        return id;
    }

    public Task<IReadOnlyList<MergeSummary>> ListAsync(MergeQuery query, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        cancellationToken.ThrowIfCancellationRequested();
        if (query.Limit < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(query), query.Limit, "limit must be 0 (no limit) or positive");
        }
        if (query.Offset < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(query), query.Offset, "offset must be 0 or positive");
        }
        if (_options.MarkAbandoned)
        {
            MarkAbandoned();
        }
        var status = query.Status is { } st ? RecordDocuments.StatusText(st) : null;
        var strategy = string.IsNullOrWhiteSpace(query.Strategy) ? null : query.Strategy.Trim().ToLowerInvariant();
        var sinceTicks = query.Since?.ToUniversalTime().Ticks;
        var untilTicks = query.Until?.ToUniversalTime().Ticks;
        var ascending = query.Sort == MergeSort.Oldest;
        var decorator = string.IsNullOrWhiteSpace(query.Decorator) ? null : query.Decorator.Trim();
        var search = string.IsNullOrWhiteSpace(query.Search) ? null : query.Search.Trim();
        var byModel = !string.IsNullOrWhiteSpace(query.Model);
        // Queries that would read every summary build the in-process index (one scan) and reuse it until the next
        // write; others use it when it is current, and otherwise walk the indexes of the file as before.
        var scans = !byModel && (decorator is not null || search is not null || query.Sort == MergeSort.Score || query.Offset >= IndexedOffset);
        var fromIndex = Locked("list merges", () =>
        {
            var index = CurrentIndex(build: scans);
            return index is null ? null : (IReadOnlyList<MergeSummary>)ListFromIndex(index, query, byModel ? ModelKeys.ForQuery(query.Model!) : null,
                status, strategy, sinceTicks, untilTicks, decorator, search);
        });
        if (fromIndex is not null)
        {
            return Task.FromResult(fromIndex);
        }
        IReadOnlyList<MergeSummary> result;
        if (byModel)
        {
            var keys = ModelKeys.ForQuery(query.Model!);
            result = Locked("list merges by model", () =>
            {
                // Filter and order the tiny model-key rows; load only the summaries the page needs.
                var byId = new Dictionary<string, BsonDocument>(StringComparer.Ordinal);
                var keyRows = _reader.GetCollection(Migrations.ModelKeyCollection);
                foreach (var side in new[] { "in:", "out:" })
                {
                    foreach (var key in keys)
                    {
                        foreach (var row in keyRows.Find(BsonExpression.Create("$.k = @0", new BsonValue(side + key))))
                        {
                            byId.TryAdd(row["m"].AsString, row);
                        }
                    }
                }
                var rows = byId.Values.Where(row =>
                        (status is null || row["s"].AsString == status)
                        && (strategy is null || (row["g"].IsString && row["g"].AsString == strategy))
                        && (sinceTicks is null || row["t"].AsInt64 >= sinceTicks)
                        && (untilTicks is null || row["t"].AsInt64 < untilTicks));
                var ids = (ascending
                        ? rows.OrderBy(row => row["t"].AsInt64).ThenBy(row => row["m"].AsString, StringComparer.Ordinal)
                        : rows.OrderByDescending(row => row["t"].AsInt64).ThenByDescending(row => row["m"].AsString, StringComparer.Ordinal))
                    .Select(row => row["m"].AsString)
                    .ToList();
                return (IReadOnlyList<MergeSummary>)Page(SummariesOf(ids), query);
            });
        }
        else
        {
            result = Locked("list merges", () => (IReadOnlyList<MergeSummary>)Page(ScanSummaries(status, strategy, sinceTicks, untilTicks, ascending), query));
        }
        return Task.FromResult(result);
    }

    /// <summary>The summary index when it matches the file's change counter; rebuilt when stale and <paramref name="build"/> is set (else null).</summary>
    private SummaryIndex? CurrentIndex(bool build)
    {
        var changes = SummaryIndex.ReadChanges(_reader);
        if (_index is { } index && index.Changes == changes)
        {
            return index;
        }
        if (!build)
        {
            return null;
        }
        _index = SummaryIndex.Build(_reader, changes);
        return _index;
    }

    private List<MergeSummary> ListFromIndex(SummaryIndex index, MergeQuery query, IReadOnlyList<string>? modelKeys,
        string? status, string? strategy, long? sinceTicks, long? untilTicks, string? decorator, string? search)
    {
        var keys = modelKeys?.SelectMany(k => new[] { "in:" + k, "out:" + k }).ToHashSet(StringComparer.Ordinal);
        var rows = (query.Sort == MergeSort.Oldest ? index.Rows.Reverse() : index.Rows).Where(r =>
            (status is null || r.Status == status)
            && (strategy is null || r.Strategy == strategy)
            && (sinceTicks is null || r.Ticks >= sinceTicks)
            && (untilTicks is null || r.Ticks < untilTicks)
            && (keys is null || r.ModelKeys.Overlaps(keys))
            && r.Matches(decorator, search));
        var page = SortAndPage(rows, query, (row, key) => row.Score(key));
        return [.. SummariesOf([.. page.Select(r => r.Id)]).Select(RecordDocuments.ReadSummary)];
    }

    /// <summary>
    /// Walks the creation-time index (newest first, or oldest first) and yields the summary documents that pass the
    /// indexed filters as they stream by, stopping at the first one past the date range: no sort of all matches.
    /// </summary>
    private IEnumerable<BsonDocument> ScanSummaries(string? status, string? strategy, long? sinceTicks, long? untilTicks, bool ascending)
    {
        var summaries = _reader.GetCollection(Migrations.SummaryCollection);
        // A status filter alone (failed, running: usually rare) is answered from the status index.
        IEnumerable<BsonDocument> source;
        if (status is not null && strategy is null)
        {
            var byStatus = summaries.Query().Where(BsonExpression.Create("$.status = @0", new BsonValue(status)));
            source = (ascending ? byStatus.OrderBy(BsonExpression.Create("$.createdTicks")) : byStatus.OrderByDescending(BsonExpression.Create("$.createdTicks"))).ToEnumerable();
        }
        else
        {
            source = summaries.Find(Query.All("createdTicks", ascending ? Query.Ascending : Query.Descending));
        }
        foreach (var doc in source)
        {
            var ticks = doc["createdTicks"].AsInt64;
            if (ascending ? untilTicks is { } max && ticks >= max : sinceTicks is { } min && ticks < min)
            {
                yield break;
            }
            if ((sinceTicks is { } from && ticks < from) || (untilTicks is { } to && ticks >= to))
            {
                continue;
            }
            if ((status is null || doc["status"].AsString == status)
                && (strategy is null || (doc["strategyKey"].IsString && doc["strategyKey"].AsString == strategy)))
            {
                yield return doc;
            }
        }
    }

    /// <summary>The summary documents of <paramref name="ids"/>, in that order, read a chunk at a time as enumerated.</summary>
    private IEnumerable<BsonDocument> SummariesOf(List<string> ids)
    {
        const int chunk = 256;
        var summaries = _reader.GetCollection(Migrations.SummaryCollection);
        for (var start = 0; start < ids.Count; start += chunk)
        {
            var part = ids.GetRange(start, Math.Min(chunk, ids.Count - start));
            // One query per chunk (in shared mode every query opens the file once).
            var docs = summaries.Find(Query.In("_id", new BsonArray(part.Select(id => new BsonValue(id)))))
                .ToDictionary(d => d["_id"].AsString, StringComparer.Ordinal);
            foreach (var id in part)
            {
                if (docs.TryGetValue(id, out var doc))
                {
                    yield return doc;
                }
            }
        }
    }

    /// <summary>
    /// Applies the filters no index answers (decorator, text), the score order, the offset and the limit to ordered
    /// candidate documents, and reads only the summaries returned.
    /// </summary>
    private static List<MergeSummary> Page(IEnumerable<BsonDocument> candidates, MergeQuery query)
    {
        var decorator = string.IsNullOrWhiteSpace(query.Decorator) ? null : query.Decorator.Trim();
        var search = string.IsNullOrWhiteSpace(query.Search) ? null : query.Search.Trim();
        var matches = decorator is null && search is null ? candidates : candidates.Where(d => RecordDocuments.Matches(d, decorator, search));
        return [.. SortAndPage(matches, query, RecordDocuments.Score).Select(RecordDocuments.ReadSummary)];
    }

    /// <summary>
    /// The query's page of <paramref name="rows"/> (given newest or oldest first): by evaluation score when the query sorts
    /// by score (highest first, merges without that score last, ties in the given order), then offset and limit. The
    /// index-backed and the scanning list both page through this.
    /// </summary>
    private static IEnumerable<T> SortAndPage<T>(IEnumerable<T> rows, MergeQuery query, Func<T, string?, double?> score)
    {
        if (query.Sort == MergeSort.Score)
        {
            var key = string.IsNullOrWhiteSpace(query.ScoreKey) ? null : query.ScoreKey.Trim();
            rows = rows
                .Select((row, order) => (Row: row, Score: score(row, key), Order: order))
                .OrderBy(x => x.Score is null ? 1 : 0)
                .ThenByDescending(x => x.Score ?? 0)
                .ThenBy(x => x.Order)
                .Select(x => x.Row);
        }
        var page = rows.Skip(query.Offset);
        return query.Limit > 0 ? page.Take(query.Limit) : page;
    }

    public Task<MergeRecord?> GetAsync(string idOrPrefix, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(idOrPrefix);
        cancellationToken.ThrowIfCancellationRequested();
        var key = idOrPrefix.Trim();
        return Task.FromResult(Locked("read a merge record", () =>
        {
            var records = _reader.GetCollection(Migrations.RecordCollection);
            var exact = records.FindById(key);
            if (exact is not null)
            {
                return RecordDocuments.ReadRecord(exact);
            }
            var matches = _reader.GetCollection(Migrations.SummaryCollection)
                .Find(Query.StartsWith("_id", key), limit: 6)
                .Select(d => d["_id"].AsString)
                .ToList();
            if (matches.Count > 1)
            {
                throw new AmbiguousMergeIdException(key, matches);
            }
            if (matches.Count == 0)
            {
                return null;
            }
            var doc = records.FindById(matches[0]);
            return doc is null ? null : RecordDocuments.ReadRecord(doc);
        }));
    }

    public async Task<ModelLineage> LineageAsync(string modelRef, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(modelRef);
        var keys = ModelKeys.ForQuery(modelRef);
        var producedBy = FindSummaries("outputKeys", keys).OrderByDescending(s => s.CreatedAt).ToList();
        var usedBy = FindSummaries("inputKeys", keys).OrderByDescending(s => s.CreatedAt).ToList();
        var visited = new HashSet<string>(StringComparer.Ordinal);
        var ancestry = new List<LineageNode>();
        foreach (var producer in producedBy)
        {
            var node = await BuildLineageNodeAsync(producer, visited, 0, cancellationToken).ConfigureAwait(false);
            if (node is not null)
            {
                ancestry.Add(node);
            }
        }
        return new ModelLineage(modelRef, producedBy, usedBy, ancestry);
    }

    public async Task<string> ExportAsync(string idOrPrefix, CancellationToken cancellationToken = default)
    {
        var record = await GetAsync(idOrPrefix, cancellationToken).ConfigureAwait(false) ?? throw new MergeNotFoundException(idOrPrefix);
        return RegistryJson.Export(record);
    }

    public Task<int> CountAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return Task.FromResult(Locked("count merges", () =>
            CurrentIndex(build: false) is { } index ? index.Rows.Count : _reader.GetCollection(Migrations.SummaryCollection).Count()));
    }

    private async Task<LineageNode?> BuildLineageNodeAsync(MergeSummary merge, HashSet<string> visited, int depth, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (!visited.Add(merge.Id) || depth >= LineageDepthLimit)
        {
            return null;
        }
        var record = await GetAsync(merge.Id, cancellationToken).ConfigureAwait(false);
        if (record is null)
        {
            return null;
        }
        var inputs = new List<LineageInput>();
        foreach (var input in record.Inputs)
        {
            var producers = FindSummaries("outputKeys", ModelKeys.ForInputs([input]).Where(k => !k.StartsWith("name:", StringComparison.Ordinal)).ToList())
                .Where(s => !string.Equals(s.Id, record.Id, StringComparison.Ordinal))
                .OrderByDescending(s => s.CreatedAt);
            var nodes = new List<LineageNode>();
            foreach (var p in producers)
            {
                var n = await BuildLineageNodeAsync(p, visited, depth + 1, cancellationToken).ConfigureAwait(false);
                if (n is not null)
                {
                    nodes.Add(n);
                }
            }
            inputs.Add(new LineageInput(input.Reference, input.ResolvedCommit, nodes));
        }
        return new LineageNode(merge, inputs);
    }

    private List<MergeSummary> FindSummaries(string keyField, IReadOnlyList<string> keys)
    {
        if (keys.Count == 0)
        {
            return [];
        }
        return Locked("find merges by model", () =>
        {
            var merges = _reader.GetCollection(Migrations.SummaryCollection);
            var found = new Dictionary<string, MergeSummary>(StringComparer.Ordinal);
            foreach (var key in keys)
            {
                foreach (var doc in merges.Find(BsonExpression.Create($"$.{keyField}[*] ANY = @0", new BsonValue(key))))
                {
                    var s = RecordDocuments.ReadSummary(doc);
                    found[s.Id] = s;
                }
            }
            return found.Values.ToList();
        });
    }

    private MergeRecord Finish(string id, MergeStatus status, MergeError error, IReadOnlyDictionary<string, double>? durations)
    {
        var action = status == MergeStatus.Cancelled ? "cancel" : "fail";
        var record = Modify(id, action, current =>
        {
            if (current.Status is MergeStatus.Failed or MergeStatus.Cancelled)
            {
                // Already final (for example marked abandoned by another process): keep the first outcome.
                return current;
            }
            MergeRecordRules.RequireRunning(current, action);
            var finished = DateTime.UtcNow;
            return current with
            {
                Status = status,
                Error = error,
                FinishedAt = finished,
                Durations = MergeRecordRules.MergeDurations(current, durations, finished),
            };
        });
        LogFinished(_logger, record.Id, record.Status, error.Message);
        return record;
    }

    private IReadOnlyList<string> MarkAbandoned()
    {
        var running = Locked("find running merges", () =>
            _reader.GetCollection(Migrations.SummaryCollection)
                .Find(BsonExpression.Create("$.status = @0", new BsonValue(RecordDocuments.StatusText(MergeStatus.Running))))
                .Select(d => (Id: d["_id"].AsString, Owner: RecordDocuments.ReadOwner(d)))
                .ToList());
        var marked = new List<string>();
        foreach (var (id, owner) in running)
        {
            if (owner is null || !ProcessLiveness.IsGone(owner))
            {
                continue;
            }
            // The owner is gone for good, so its temporary output folder is nobody's: remove it first, then say so.
            var partial = Locked("read a running merge", () => _reader.GetCollection(Migrations.RecordCollection).FindById(id) is { } doc
                ? RecordDocuments.ReadRecord(doc).PartialFolder
                : null);
            var message = $"process ended while merging (pid {owner.ProcessId} on {owner.MachineName}, started {owner.ProcessStartedAt:O})"
                + (partial is null ? string.Empty : PartialFolders.Remove(partial));
            var changed = Modify(id, "mark abandoned", current =>
                current.Status != MergeStatus.Running || current.Owner != owner
                    ? current
                    : current with
                    {
                        Status = MergeStatus.Failed,
                        Error = new MergeError("ProcessEnded", message),
                        FinishedAt = DateTime.UtcNow,
                    });
            if (changed.Status == MergeStatus.Failed && changed.Error?.Type == "ProcessEnded")
            {
                marked.Add(id);
                LogAbandoned(_logger, id, owner.ProcessId, owner.MachineName, message);
            }
        }
        return marked;
    }

    /// <summary>Read, change and write one record in one transaction (atomic across processes).</summary>
    private MergeRecord Modify(string id, string action, Func<MergeRecord, MergeRecord> change)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(id);
        return Locked(action + " a merge record", () =>
        {
            // Read once without write access: damage is reported before a writing engine could flag the file.
            _ = _reader.GetCollection(Migrations.RecordCollection).FindById(id) ?? throw new MergeNotFoundException(id);
            return InTransaction(() => ModifyCore(id, change));
        });
    }

    private MergeRecord ModifyCore(string id, Func<MergeRecord, MergeRecord> change)
    {
        {
            var records = _db.GetCollection(Migrations.RecordCollection);
            var doc = records.FindById(id) ?? throw new MergeNotFoundException(id);
            var current = RecordDocuments.ReadRecord(doc);
            var changed = change(current);
            if (!ReferenceEquals(changed, current))
            {
                RecordDocuments.Store(_db, changed, insert: false);
            }
            return changed;
        }
    }

    private void PrepareSchema()
    {
        Locked("read the schema version", () =>
        {
            var version = Migrations.ReadVersion(_reader);
            OpenedSchemaVersion = version;
            if (version > CurrentSchemaVersion)
            {
                throw new RegistrySchemaException(FilePath, version, CurrentSchemaVersion);
            }
            if (version == CurrentSchemaVersion)
            {
                return 0;
            }
            InTransaction(() =>
            {
                // Another process may have migrated while we waited for the lock.
                var now = Migrations.ReadVersion(_db);
                if (now == 0)
                {
                    Migrations.EnsureIndexes(_db);
                    Migrations.WriteVersion(_db, CurrentSchemaVersion);
                    return 0;
                }
                if (now > CurrentSchemaVersion)
                {
                    throw new RegistrySchemaException(FilePath, now, CurrentSchemaVersion);
                }
                foreach (var step in Migrations.Steps.Where(s => s.From >= now).OrderBy(s => s.From))
                {
                    LogMigrating(_logger, FilePath, step.From, step.From + 1, step.Description);
                    step.Apply(_db);
                }
                Migrations.EnsureIndexes(_db);
                Migrations.WriteVersion(_db, CurrentSchemaVersion);
                return 0;
            });
            return 0;
        });
    }

    private T InTransaction<T>(Func<T> work)
    {
        if (!_db.BeginTrans())
        {
            throw new InvalidOperationException("a registry transaction is already open on this thread");
        }
        try
        {
            var result = work();
            _db.Commit();
            return result;
        }
        catch
        {
            _db.Rollback();
            throw;
        }
    }

    /// <summary>Runs one registry operation under the in-process lock, turning storage faults into <see cref="RegistryCorruptException"/>.</summary>
    private T Locked<T>(string what, Func<T> work)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            try
            {
                return work();
            }
            catch (Exception ex) when (IsStorageFault(ex))
            {
                throw new RegistryCorruptException(FilePath, $"could not {what}: {ex.Message}", ex);
            }
        }
    }

    private static bool IsStorageFault(Exception ex) => ex switch
    {
        LiteException le => le.ErrorCode != LiteException.LOCK_TIMEOUT && le.ErrorCode != LiteException.INDEX_DUPLICATE_KEY,
        // DecoderFallbackException: a damaged page's names (collection, index, field) are not valid UTF-8.
        JsonException or InvalidDataException or EndOfStreamException or IndexOutOfRangeException or InvalidCastException
            or OverflowException or NullReferenceException or ArgumentOutOfRangeException or System.Text.DecoderFallbackException => true,
        _ => false,
    };

    private static void CheckFile(string path)
    {
        string? problem = null;
        // A writer in another process may be mid-checkpoint; a real defect persists across a short wait.
        for (var attempt = 0; attempt < 3; attempt++)
        {
            problem = RegistryFileCheck.FindProblem(path);
            if (problem is null)
            {
                return;
            }
            Thread.Sleep(50);
        }
        throw new RegistryCorruptException(path, problem!);
    }

    [LoggerMessage(EventId = 6001, Level = LogLevel.Information, Message = "Registry: merge {MergeId} started ({Method})")]
    private static partial void LogBegun(ILogger logger, string mergeId, string method);

    [LoggerMessage(EventId = 6002, Level = LogLevel.Information, Message = "Registry: merge {MergeId} {Status} ({Detail})")]
    private static partial void LogFinished(ILogger logger, string mergeId, MergeStatus status, string detail);

    [LoggerMessage(EventId = 6003, Level = LogLevel.Warning, Message = "Registry: merge {MergeId} was running in process {ProcessId} on {Machine}, which has ended; marked failed: {Detail}")]
    private static partial void LogAbandoned(ILogger logger, string mergeId, int processId, string machine, string detail);

    [LoggerMessage(EventId = 6004, Level = LogLevel.Information, Message = "Registry: migrating {File} from schema {From} to {To}: {Description}")]
    private static partial void LogMigrating(ILogger logger, string file, int from, int to, string description);
}
