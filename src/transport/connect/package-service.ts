import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  ListPackagesResponseSchema,
  type PackageService,
} from "../../../gen/fermilink/runner/v1/packages_pb.js";
import type { PackageCatalog } from "../../packages/package-catalog.js";

/** PackageService: the installed scientific packages, for clients to offer. */
export function createPackageService(
  catalog: Pick<PackageCatalog, "list">,
): ServiceImpl<typeof PackageService> {
  return {
    async listPackages() {
      const { packages, activeId, problem } = await catalog.list();
      return create(ListPackagesResponseSchema, {
        packages: packages.map((p) => ({ ...p, overlayEntries: p.overlayEntries ?? [] })),
        activePackageId: activeId ?? "",
        registryProblem: problem ?? "",
      });
    },
  };
}
