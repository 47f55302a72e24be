using LiteDB;

namespace SensMerging.Registry.Storage;

/// <summary>
/// An in-process copy of what the list filters read from every summary (time, status, strategy, decorators, model
/// keys, searchable text, scores), newest first, tagged with the registry's change counter. Every write of a record
/// bumps the counter (<see cref="RecordDocuments.Store"/>, in the write's transaction), so a copy whose tag equals the
/// stored counter is exactly the summaries in the file, whichever process wrote them. Queries that would otherwise read
/// every summary (text search, decorator, score order, deep pages, popular models) filter this copy in memory and load
/// only the summaries they return.
/// </summary>
internal sealed class SummaryIndex
{
    /// <summary>The meta document holding the change counter.</summary>
    public const string ChangesDocumentId = "changes";

    private SummaryIndex(long changes, IReadOnlyList<Row> rows)
    {
        Changes = changes;
        Rows = rows;
    }

    /// <summary>The change counter the copy was made at.</summary>
    public long Changes { get; }

    /// <summary>Newest first (created ticks, then id, both descending).</summary>
    public IReadOnlyList<Row> Rows { get; }

    /// <summary>One summary's filter fields.</summary>
    public sealed record Row(
        string Id, long Ticks, string Status, string? Strategy, string[] Decorators, HashSet<string> ModelKeys, string[] Text, BsonDocument? Scores)
    {
        public bool Matches(string? decorator, string? search) =>
            (decorator is null || Decorators.Any(d => string.Equals(d, decorator, StringComparison.OrdinalIgnoreCase)))
            && (search is null || Text.Any(t => t.Contains(search, StringComparison.OrdinalIgnoreCase)));

        public double? Score(string? key)
        {
            if (Scores is null)
            {
                return null;
            }
            var value = key is null ? Scores.Values.FirstOrDefault() : Scores.TryGetValue(key, out var v) ? v : null;
            return value is not null && value.IsNumber ? value.AsDouble : null;
        }
    }

    /// <summary>The stored change counter (0 before the first write).</summary>
    public static long ReadChanges(LiteDatabase db)
    {
        var doc = db.GetCollection(Migrations.MetaCollection).FindById(ChangesDocumentId);
        return doc is not null && doc.TryGetValue("n", out var n) && n.IsNumber ? n.AsInt64 : 0;
    }

    /// <summary>Adds one to the change counter (inside the caller's transaction).</summary>
    public static void BumpChanges(LiteDatabase db)
    {
        var meta = db.GetCollection(Migrations.MetaCollection);
        meta.Upsert(new BsonDocument { ["_id"] = ChangesDocumentId, ["n"] = new BsonValue(ReadChanges(db) + 1) });
    }

    /// <summary>Reads every summary (one scan) into a copy tagged <paramref name="changes"/>.</summary>
    public static SummaryIndex Build(LiteDatabase db, long changes)
    {
        var rows = new List<Row>();
        foreach (var doc in db.GetCollection(Migrations.SummaryCollection).FindAll())
        {
            var keys = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (field, side) in new[] { ("inputKeys", "in:"), ("outputKeys", "out:") })
            {
                if (doc.TryGetValue(field, out var array) && array.IsArray)
                {
                    keys.UnionWith(array.AsArray.Where(k => k.IsString).Select(k => side + k.AsString));
                }
            }
            var text = new List<string> { doc["_id"].AsString };
            text.AddRange(new[] { "method", "outputRepoId", "outputFolder" }.Select(f => doc.TryGetValue(f, out var v) && v.IsString ? v.AsString : null).OfType<string>());
            text.AddRange(Strings(doc, "inputs"));
            text.AddRange(Strings(doc, "tags"));
            rows.Add(new Row(
                doc["_id"].AsString,
                doc["createdTicks"].AsInt64,
                doc["status"].AsString,
                doc["strategyKey"].IsString ? doc["strategyKey"].AsString : null,
                [.. Strings(doc, "decorators")],
                keys,
                [.. text],
                doc.TryGetValue("scores", out var scores) && scores.IsDocument ? scores.AsDocument : null));
        }
        rows.Sort((a, b) => a.Ticks != b.Ticks ? b.Ticks.CompareTo(a.Ticks) : string.CompareOrdinal(b.Id, a.Id));
        return new SummaryIndex(changes, rows);
    }

    private static IEnumerable<string> Strings(BsonDocument doc, string field) =>
        doc.TryGetValue(field, out var v) && v.IsArray ? v.AsArray.Where(x => x.IsString).Select(x => x.AsString) : [];
}
