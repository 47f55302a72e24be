using System.Text.Json.Serialization;

namespace SensMerging.Hub.Server.Store;

/// <summary>One file of a stored commit: its path, and the content-addressed blob (by SHA-256) holding its bytes.</summary>
/// <param name="Path">Path inside the repository ('/' separators).</param>
/// <param name="Size">Size in bytes.</param>
/// <param name="Sha256">SHA-256 of the content: the blob's name.</param>
/// <param name="GitOid">Git blob sha1 (of the content for regular files, of the LFS pointer for LFS files).</param>
/// <param name="Lfs">True when the file was committed through LFS (by its oid).</param>
public sealed record StoredFile(
    [property: JsonPropertyName("path")] string Path,
    [property: JsonPropertyName("size")] long Size,
    [property: JsonPropertyName("sha256")] string Sha256,
    [property: JsonPropertyName("gitOid")] string GitOid,
    [property: JsonPropertyName("lfs")] bool Lfs);

/// <summary>A commit: parents, message, author (the token's name), time, and the whole file tree.</summary>
public sealed record StoredCommit(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("parents")] IReadOnlyList<string> Parents,
    [property: JsonPropertyName("title")] string Title,
    [property: JsonPropertyName("description")] string? Description,
    [property: JsonPropertyName("author")] string? Author,
    [property: JsonPropertyName("date")] DateTimeOffset Date,
    [property: JsonPropertyName("files")] IReadOnlyList<StoredFile> Files);

/// <summary>A stored repository's settings.</summary>
public sealed record StoredRepositoryInfo(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("private")] bool Private,
    [property: JsonPropertyName("createdAt")] DateTimeOffset CreatedAt,
    [property: JsonPropertyName("createdBy")] string? CreatedBy);

/// <summary>One change of a commit.</summary>
public abstract record CommitOperation(string Path);

/// <summary>Adds or replaces a file whose bytes are already a blob (inline content written first, or an LFS object).</summary>
/// <param name="Path">Path inside the repository.</param>
/// <param name="Sha256">The blob.</param>
/// <param name="Size">Its size; checked against the blob.</param>
/// <param name="GitSha1">Git blob sha1 of the content (regular files; computed when the content was written).</param>
/// <param name="Lfs">Committed by LFS oid.</param>
public sealed record AddFileOperation(string Path, string Sha256, long Size, string? GitSha1, bool Lfs) : CommitOperation(Path);

/// <summary>Removes a file.</summary>
public sealed record DeleteFileOperation(string Path) : CommitOperation(Path);

/// <summary>Removes every file under a folder.</summary>
public sealed record DeleteFolderOperation(string Path) : CommitOperation(Path);

/// <summary>What a commit request carries.</summary>
/// <param name="Title">The summary line.</param>
/// <param name="Description">The rest of the message.</param>
/// <param name="ParentCommit">When set, the branch head must be this commit (else the commit is refused).</param>
/// <param name="Author">Who commits (the token's name).</param>
/// <param name="Operations">The changes, applied in order.</param>
public sealed record CommitRequest(string Title, string? Description, string? ParentCommit, string? Author, IReadOnlyList<CommitOperation> Operations);

/// <summary>Why the store refused a request; the write API turns each into the Hub's status and error code.</summary>
public enum HubStoreErrorKind
{
    /// <summary>Bad input (path, branch name, body).</summary>
    BadRequest,

    /// <summary>No such repository (404 RepoNotFound).</summary>
    RepositoryNotFound,

    /// <summary>No such branch or commit (404 RevisionNotFound).</summary>
    RevisionNotFound,

    /// <summary>Already exists (409).</summary>
    Conflict,

    /// <summary>The branch moved past the stated parent commit (412).</summary>
    ParentMismatch,

    /// <summary>A commit names an LFS object the server does not have (422).</summary>
    LfsObjectMissing,

    /// <summary>Uploaded bytes do not hash to the announced SHA-256 or size (400).</summary>
    HashMismatch,
}

/// <summary>A refused store request, with a message naming the problem.</summary>
public sealed class HubStoreException : Exception
{
    public HubStoreException(HubStoreErrorKind kind, string message) : base(message) => Kind = kind;

    public HubStoreException()
    {
    }

    public HubStoreException(string message) : base(message)
    {
    }

    public HubStoreException(string message, Exception innerException) : base(message, innerException)
    {
    }

    /// <summary>What went wrong.</summary>
    public HubStoreErrorKind Kind { get; }
}
