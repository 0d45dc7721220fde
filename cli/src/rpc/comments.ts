import type {
  DescEnum,
  DescEnumValue,
  DescField,
  DescFile,
  DescMessage,
  DescMethod,
  DescService,
} from "@bufbuild/protobuf";

export type CommentedDesc = DescService | DescMethod | DescMessage | DescField | DescEnum | DescEnumValue;

// Field numbers of FileDescriptorProto / DescriptorProto / ServiceDescriptorProto / EnumDescriptorProto
// that make up a SourceCodeInfo location path (google/protobuf/descriptor.proto).
const FILE_MESSAGE = 4;
const FILE_ENUM = 5;
const FILE_SERVICE = 6;
const MESSAGE_FIELD = 2;
const MESSAGE_NESTED = 3;
const MESSAGE_ENUM = 4;
const SERVICE_METHOD = 2;
const ENUM_VALUE = 2;

const byFile = new WeakMap<DescFile, Map<string, string>>();

/**
 * The leading comment of a declaration, from the descriptor set's source info (protobuf-es runtime
 * descriptors carry no comments). Lines are joined with `\n`, blank lines kept as paragraph breaks;
 * empty when the set was built without source info or the element has no comment.
 */
export function commentOf(desc: CommentedDesc): string {
  return commentsIn(fileOf(desc)).get(pathOf(desc).join(",")) ?? "";
}

/** The first sentence of a comment, on one line: used for summaries in lists. */
export function firstSentence(comment: string): string {
  const paragraph = (comment.split(/\n\s*\n/)[0] ?? "").replace(/\s+/g, " ").trim();
  const end = paragraph.search(/\.(\s|$)/);
  return end === -1 ? paragraph : paragraph.slice(0, end + 1);
}

function commentsIn(file: DescFile): Map<string, string> {
  let comments = byFile.get(file);
  if (!comments) {
    comments = new Map();
    for (const location of file.proto.sourceCodeInfo?.location ?? []) {
      const text = location.leadingComments;
      if (!text) continue;
      const lines = text.replace(/\n$/, "").split("\n");
      comments.set(location.path.join(","), lines.map((l) => l.replace(/^ /, "").trimEnd()).join("\n"));
    }
    byFile.set(file, comments);
  }
  return comments;
}

function fileOf(desc: CommentedDesc): DescFile {
  switch (desc.kind) {
    case "rpc":
      return desc.parent.file;
    case "field":
      return desc.parent.file;
    case "enum_value":
      return desc.parent.file;
    default:
      return desc.file;
  }
}

function pathOf(desc: CommentedDesc): number[] {
  switch (desc.kind) {
    case "service":
      return [FILE_SERVICE, desc.file.proto.service.indexOf(desc.proto)];
    case "rpc":
      return [...pathOf(desc.parent), SERVICE_METHOD, desc.parent.proto.method.indexOf(desc.proto)];
    case "message":
      return desc.parent
        ? [...pathOf(desc.parent), MESSAGE_NESTED, desc.parent.proto.nestedType.indexOf(desc.proto)]
        : [FILE_MESSAGE, desc.file.proto.messageType.indexOf(desc.proto)];
    case "field":
      return [...pathOf(desc.parent), MESSAGE_FIELD, desc.parent.proto.field.indexOf(desc.proto)];
    case "enum":
      return desc.parent
        ? [...pathOf(desc.parent), MESSAGE_ENUM, desc.parent.proto.enumType.indexOf(desc.proto)]
        : [FILE_ENUM, desc.file.proto.enumType.indexOf(desc.proto)];
    case "enum_value":
      return [...pathOf(desc.parent), ENUM_VALUE, desc.parent.proto.value.indexOf(desc.proto)];
  }
}
