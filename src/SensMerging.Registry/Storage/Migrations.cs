using LiteDB;

namespace SensMerging.Registry.Storage;

/// <summary>
/// Schema history of the registry file and the steps between versions. The version lives in the <c>meta</c>
/// collection (document <c>schema</c>). A file without <c>meta</c> but with a <c>merges</c> collection was written
/// by the first layout (version 1).
/// <list type="bullet">
/// <item>Version 1: one collection <c>merges</c>; each document <c>{_id, status, createdTicks, strategy, record}</c>
/// with the whole record under <c>record</c>; no model keys (model filters and lineage had to scan every record).</item>
/// <item>Version 2: <c>merges</c> holds small summary documents with indexed model keys (<c>inputKeys</c>,
/// <c>outputKeys</c>) and the owner process; the full records live in <c>records</c>; <c>modelkeys</c> holds one
/// tiny row per (model key, merge) for <c>--model</c> filters. List and lineage read only summaries.</item>
/// <item>Version 3: summary documents carry the merged model's latest evaluation scores (<c>scores</c>, by
/// <c>task/metric</c>) so lists sort by a score without reading whole records; the migration rewrites every summary.</item>
/// </list>
/// </summary>
internal static class Migrations
{
    public const string MetaCollection = "meta";
    public const string SummaryCollection = "merges";
    public const string RecordCollection = "records";
    public const string ModelKeyCollection = "modelkeys";
    public const string SchemaDocumentId = "schema";

    /// <summary>Migrations by the version they start from; each brings the file to the next version.</summary>
    public static IReadOnlyList<(int From, string Description, Action<LiteDatabase> Apply)> Steps { get; } =
    [
        (1, "split records from indexed summaries; add model keys for --model and lineage", MigrateV1ToV2),
        (2, "add evaluation scores to the summaries", MigrateV2ToV3),
    ];

    /// <summary>The version stored in the file: 0 for a file with no collections at all (new), 1 for the first layout without meta.</summary>
    public static int ReadVersion(LiteDatabase db)
    {
        if (db.CollectionExists(MetaCollection))
        {
            var meta = db.GetCollection(MetaCollection).FindById(SchemaDocumentId);
            if (meta is not null && meta.TryGetValue("version", out var v) && v.IsNumber)
            {
                return v.AsInt32;
            }
        }
        return db.CollectionExists(SummaryCollection) ? 1 : 0;
    }

    public static void WriteVersion(LiteDatabase db, int version)
    {
        db.GetCollection(MetaCollection).Upsert(new BsonDocument
        {
            ["_id"] = SchemaDocumentId,
            ["version"] = version,
            ["updatedAt"] = DateTime.UtcNow,
            ["writer"] = typeof(Migrations).Assembly.GetName().Version?.ToString() ?? "unknown",
        });
    }

    /// <summary>Creates the indexes of the current layout (no-op when they exist).</summary>
    public static void EnsureIndexes(LiteDatabase db)
    {
        var merges = db.GetCollection(SummaryCollection);
        merges.EnsureIndex("status", "$.status");
        merges.EnsureIndex("createdTicks", "$.createdTicks");
        merges.EnsureIndex("strategyKey", "$.strategyKey");
        merges.EnsureIndex("inputKeys", "$.inputKeys[*]");
        merges.EnsureIndex("outputKeys", "$.outputKeys[*]");
        var keys = db.GetCollection(ModelKeyCollection);
        keys.EnsureIndex("k", "$.k");
        keys.EnsureIndex("m", "$.m");
    }

    private static void MigrateV2ToV3(LiteDatabase db)
    {
        var summaries = db.GetCollection(SummaryCollection);
        foreach (var doc in db.GetCollection(RecordCollection).FindAll().ToList())
        {
            var record = RecordDocuments.ReadRecord(doc);
            var summary = RecordDocuments.Summary(record);
            summaries.Upsert(summary);
        }
        SummaryIndex.BumpChanges(db);
    }

    private static void MigrateV1ToV2(LiteDatabase db)
    {
        var old = db.GetCollection(SummaryCollection);
        var converted = new List<MergeRecord>();
        foreach (var doc in old.FindAll())
        {
            if (!doc.TryGetValue("record", out var body) || !body.IsDocument)
            {
                throw new InvalidDataException($"version-1 merge document '{doc["_id"]}' has no 'record' field");
            }
            converted.Add(BsonJson.FromDocument<MergeRecord>(body.AsDocument));
        }
        foreach (var index in new[] { "status", "createdTicks", "strategy" })
        {
            old.DropIndex(index);
        }
        foreach (var record in converted)
        {
            RecordDocuments.Store(db, record, insert: false);
        }
    }
}
