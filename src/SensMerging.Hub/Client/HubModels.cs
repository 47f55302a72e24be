using System.Globalization;
using System.Text.Json;

namespace SensMerging.Hub.Client;

/// <summary>LFS details of a large file: sha256 of the content, real size, size of the git pointer file.</summary>
public sealed record HubLfsInfo(string Sha256, long Size, long? PointerSize);

/// <summary>One file as model info lists it.</summary>
public sealed record HubSibling(string RFilename, long? Size, string? BlobId, HubLfsInfo? Lfs);

/// <summary>Model info: the commit a revision resolves to and the files of that commit.</summary>
public sealed record HubModelInfo(
    string Id, string Sha, DateTimeOffset? LastModified, bool Private, string? Gated, IReadOnlyList<HubSibling> Siblings)
{
    internal static HubModelInfo Parse(JsonElement root, string repoId)
    {
        var siblings = new List<HubSibling>();
        if (root.TryGetProperty("siblings", out var sib) && sib.ValueKind == JsonValueKind.Array)
        {
            foreach (var s in sib.EnumerateArray())
            {
                var name = GetString(s, "rfilename");
                if (name is null)
                {
                    continue;
                }

                HubLfsInfo? lfs = null;
                if (s.TryGetProperty("lfs", out var l) && l.ValueKind == JsonValueKind.Object && GetString(l, "sha256") is { } sha)
                {
                    lfs = new HubLfsInfo(sha, GetLong(l, "size") ?? 0, GetLong(l, "pointerSize"));
                }

                siblings.Add(new HubSibling(name, GetLong(s, "size"), GetString(s, "blobId"), lfs));
            }
        }

        string? gated = null;
        if (root.TryGetProperty("gated", out var g))
        {
            gated = g.ValueKind switch
            {
                JsonValueKind.String => g.GetString(),
                JsonValueKind.True => "true",
                _ => null,
            };
        }

        var sha1 = GetString(root, "sha") ?? throw new HubException($"Model info of '{repoId}' has no 'sha' field.", repoId);
        DateTimeOffset? lastModified = GetString(root, "lastModified") is { } lm
            && DateTimeOffset.TryParse(lm, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var dto) ? dto : null;
        return new HubModelInfo(GetString(root, "id") ?? repoId, sha1, lastModified,
            root.TryGetProperty("private", out var p) && p.ValueKind == JsonValueKind.True, gated, siblings);
    }

    internal static string? GetString(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    internal static long? GetLong(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var n) ? n : null;
}

/// <summary>One entry of a tree listing or a paths-info answer.</summary>
public sealed record HubTreeEntry(string Type, string Path, long Size, string? Oid, HubLfsInfo? Lfs)
{
    /// <summary>True for a file (not a directory).</summary>
    public bool IsFile => Type == "file";

    /// <summary>The etag the Hub gives the file: sha256 for LFS files, the git blob sha1 otherwise.</summary>
    public string? Etag => Lfs?.Sha256 ?? Oid;

    internal static HubTreeEntry Parse(JsonElement e)
    {
        HubLfsInfo? lfs = null;
        if (e.TryGetProperty("lfs", out var l) && l.ValueKind == JsonValueKind.Object
            && (HubModelInfo.GetString(l, "oid") ?? HubModelInfo.GetString(l, "sha256")) is { } sha)
        {
            lfs = new HubLfsInfo(sha, HubModelInfo.GetLong(l, "size") ?? 0, HubModelInfo.GetLong(l, "pointerSize"));
        }

        return new HubTreeEntry(
            HubModelInfo.GetString(e, "type") ?? "file",
            HubModelInfo.GetString(e, "path") ?? string.Empty,
            HubModelInfo.GetLong(e, "size") ?? lfs?.Size ?? 0,
            HubModelInfo.GetString(e, "oid"),
            lfs);
    }
}

/// <summary>What a HEAD on a resolve URL says about a file.</summary>
public sealed record HubFileMetadata(string? Commit, string? Etag, long? Size, Uri Location);
