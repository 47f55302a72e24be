using LiteDB;

namespace SensMerging.Registry.Storage;

/// <summary>The stored form of a record: the full record document, and the small indexed summary document.</summary>
internal static class RecordDocuments
{
    /// <summary>Fields of a summary document that are index keys, not <see cref="MergeSummary"/> properties.</summary>
    public static readonly string[] SummaryIndexFields = ["_id", "createdTicks", "strategyKey", "inputKeys", "outputKeys", "owner"];

    /// <summary>
    /// Writes a record, its summary and its model-key rows (call inside a transaction). <paramref name="insert"/>
    /// fails on an existing id; otherwise the record is replaced.
    /// </summary>
    public static void Store(LiteDatabase db, MergeRecord record, bool insert)
    {
        var records = db.GetCollection(Migrations.RecordCollection);
        var summaries = db.GetCollection(Migrations.SummaryCollection);
        var keys = db.GetCollection(Migrations.ModelKeyCollection);
        if (insert)
        {
            records.Insert(Record(record));
            summaries.Insert(Summary(record));
        }
        else
        {
            records.Upsert(Record(record));
            summaries.Upsert(Summary(record));
            keys.DeleteMany(BsonExpression.Create("$.m = @0", new BsonValue(record.Id)));
        }
        keys.InsertBulk(KeyRows(record));
        SummaryIndex.BumpChanges(db);
    }

    /// <summary>
    /// One small row per (model key, side) of a merge: <c>k</c> = <c>in:</c> or <c>out:</c> + key, <c>m</c> merge id,
    /// <c>t</c> created ticks, <c>s</c> status, <c>g</c> strategy key. <c>--model</c> filters and orders these rows and
    /// loads only the summaries it returns.
    /// </summary>
    public static IEnumerable<BsonDocument> KeyRows(MergeRecord record)
    {
        var status = StatusText(record.Status);
        BsonValue strategy = record.Strategy is null ? BsonValue.Null : new BsonValue(record.Strategy.Component.ToLowerInvariant());
        var sides = ModelKeys.ForInputs(record.Inputs).Select(k => "in:" + k).Concat(ModelKeys.ForOutputs(record.Outputs).Select(k => "out:" + k));
        return sides.Select(k => new BsonDocument
        {
            ["k"] = k,
            ["m"] = record.Id,
            ["t"] = record.CreatedAt.Ticks,
            ["s"] = status,
            ["g"] = strategy,
        }).ToList();
    }

    public static BsonDocument Record(MergeRecord record)
    {
        var doc = BsonJson.ToDocument(record);
        doc["_id"] = record.Id;
        return doc;
    }

    public static MergeRecord ReadRecord(BsonDocument doc) => BsonJson.FromDocument<MergeRecord>(doc, "_id");

    public static BsonDocument Summary(MergeRecord record)
    {
        var doc = BsonJson.ToDocument(MergeSummary.From(record));
        doc["_id"] = record.Id;
        doc["createdTicks"] = record.CreatedAt.Ticks;
        doc["strategyKey"] = record.Strategy is null ? BsonValue.Null : new BsonValue(record.Strategy.Component.ToLowerInvariant());
        doc["inputKeys"] = new BsonArray(ModelKeys.ForInputs(record.Inputs).Select(k => new BsonValue(k)));
        doc["outputKeys"] = new BsonArray(ModelKeys.ForOutputs(record.Outputs).Select(k => new BsonValue(k)));
        doc["owner"] = record.Owner is null ? BsonValue.Null : BsonJson.ToDocument(record.Owner);
        return doc;
    }

    /// <summary>
    /// True when a summary document has <paramref name="decorator"/> in its chain (case-insensitive) and holds
    /// <paramref name="search"/> (case-insensitive) in its id, method, an input, a tag or its output; null means any.
    /// Reads the BSON fields directly, so a scan does not deserialize the summaries it passes over.
    /// </summary>
    public static bool Matches(BsonDocument doc, string? decorator, string? search)
    {
        if (decorator is not null && !Strings(doc, "decorators").Any(d => string.Equals(d, decorator, StringComparison.OrdinalIgnoreCase)))
        {
            return false;
        }
        if (search is null)
        {
            return true;
        }
        bool Has(string? value) => value is not null && value.Contains(search, StringComparison.OrdinalIgnoreCase);
        return Has(doc["_id"].AsString) || Has(String(doc, "method")) || Has(String(doc, "outputRepoId")) || Has(String(doc, "outputFolder"))
            || Strings(doc, "inputs").Any(Has) || Strings(doc, "tags").Any(Has);
    }

    /// <summary>The summary's score under <paramref name="key"/> (<c>task/metric</c>), or its first score when the key is null.</summary>
    public static double? Score(BsonDocument doc, string? key)
    {
        if (!doc.TryGetValue("scores", out var scores) || !scores.IsDocument)
        {
            return null;
        }
        var table = scores.AsDocument;
        var value = key is null ? table.Values.FirstOrDefault() : table.TryGetValue(key, out var v) ? v : null;
        return value is not null && value.IsNumber ? value.AsDouble : null;
    }

    private static string? String(BsonDocument doc, string field) =>
        doc.TryGetValue(field, out var v) && v.IsString ? v.AsString : null;

    private static IEnumerable<string> Strings(BsonDocument doc, string field) =>
        doc.TryGetValue(field, out var v) && v.IsArray ? v.AsArray.Where(x => x.IsString).Select(x => x.AsString) : [];

    public static MergeSummary ReadSummary(BsonDocument doc) => BsonJson.FromDocument<MergeSummary>(doc, SummaryIndexFields);

    public static ProcessOwner? ReadOwner(BsonDocument summary) =>
        summary.TryGetValue("owner", out var owner) && owner.IsDocument ? BsonJson.FromDocument<ProcessOwner>(owner.AsDocument) : null;

    public static string StatusText(MergeStatus status) => status switch
    {
        MergeStatus.Running => "running",
        MergeStatus.Succeeded => "succeeded",
        MergeStatus.Failed => "failed",
        _ => "cancelled",
    };
}
